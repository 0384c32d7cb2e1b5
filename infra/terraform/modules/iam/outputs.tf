output "pipeline_role_arn" {
  description = "Task role of the Dagster code location and run tasks."
  value       = aws_iam_role.pipeline.arn
}

output "pipeline_role_name" {
  description = "Name of the pipeline role (the render module attaches its launch permissions to it)."
  value       = aws_iam_role.pipeline.name
}

output "migration_role_arn" {
  description = "Role for the legacy migration (no deletes)."
  value       = aws_iam_role.migration.arn
}

output "migration_rollback_role_arn" {
  description = "Role for t2m migrate rollback (the only role that deletes object versions)."
  value       = aws_iam_role.migration_rollback.arn
}

output "read_only_role_arn" {
  description = "Read-only role."
  value       = aws_iam_role.read_only.arn
}
