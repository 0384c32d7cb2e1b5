output "cluster_name" {
  description = "ECS cluster of the Dagster services and runs."
  value       = aws_ecs_cluster.this.name
}

output "cluster_arn" {
  description = "ECS cluster ARN."
  value       = aws_ecs_cluster.this.arn
}

output "service_names" {
  description = "ECS services: webserver, daemon, code-location."
  value = {
    webserver     = aws_ecs_service.webserver.name
    daemon        = aws_ecs_service.daemon.name
    code_location = aws_ecs_service.code_location.name
  }
}

output "run_task_definition_family" {
  description = "Task definition family EcsRunLauncher starts per run (DAGSTER_RUN_TASK_DEFINITION)."
  value       = aws_ecs_task_definition.run.family
}

output "execution_role_arn" {
  description = "Task execution role."
  value       = aws_iam_role.execution.arn
}

output "task_security_group_id" {
  description = "Security group of the webserver, daemon and run tasks."
  value       = aws_security_group.tasks.id
}
