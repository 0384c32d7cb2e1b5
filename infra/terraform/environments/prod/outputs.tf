output "bucket_names" {
  description = "Data bucket per kind."
  value       = module.storage.bucket_names
}

output "db_instance_identifier" {
  description = "RDS instance (point-in-time restore source)."
  value       = module.database.instance_identifier
}

output "db_proxy_endpoint" {
  description = "RDS Proxy endpoint of the applications."
  value       = module.database.proxy_endpoint
}

output "db_master_user_secret_arn" {
  description = "Secrets Manager secret of the master user (managed by RDS)."
  value       = module.database.master_user_secret_arn
}

output "ecs_cluster_name" {
  description = "ECS cluster of Dagster."
  value       = module.dagster.cluster_name
}

output "role_arns" {
  description = "Platform roles."
  value = {
    pipeline           = module.iam.pipeline_role_arn
    migration          = module.iam.migration_role_arn
    migration_rollback = module.iam.migration_rollback_role_arn
    read_only          = module.iam.read_only_role_arn
  }
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms."
  value       = module.observability.alarm_topic_arn
}

output "db_security_group_id" {
  description = "Security group of the RDS instance (restores)."
  value       = module.database.db_security_group_id
}

output "run_task_security_group_ids" {
  description = "Security groups of one-off tasks of the run task definition (t2m db upgrade, t2m doctor)."
  value       = [module.dagster.task_security_group_id, module.database.client_security_group_id]
}
