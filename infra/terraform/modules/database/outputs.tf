output "instance_identifier" {
  description = "RDS instance identifier (CloudWatch dimension DBInstanceIdentifier, point-in-time restore source)."
  value       = aws_db_instance.this.identifier
}

output "instance_resource_id" {
  description = "DbiResourceId, the resource part of rds-db:connect ARNs for IAM database authentication."
  value       = aws_db_instance.this.resource_id
}

output "instance_address" {
  description = "Instance endpoint host (IAM-authenticated operator sessions; applications use proxy_endpoint)."
  value       = aws_db_instance.this.address
}

output "proxy_endpoint" {
  description = "RDS Proxy endpoint host that applications and Dagster connect to."
  value       = aws_db_proxy.this.endpoint
}

output "port" {
  description = "PostgreSQL port."
  value       = local.port
}

output "database_name" {
  description = "Database name."
  value       = var.database_name
}

output "master_username" {
  description = "Master user name."
  value       = var.master_username
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret (JSON with username and password) managed and rotated by RDS."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "kms_key_arn" {
  description = "CMK encrypting storage, Performance Insights, the master secret and the RDS log groups."
  value       = aws_kms_key.rds.arn
}

output "client_security_group_id" {
  description = "Security group to attach to tasks that use PostgreSQL."
  value       = aws_security_group.client.id
}

output "db_security_group_id" {
  description = "Security group of the instance (for restored instances)."
  value       = aws_security_group.db.id
}

output "subnet_group_name" {
  description = "DB subnet group (for restored instances)."
  value       = aws_db_subnet_group.this.name
}
