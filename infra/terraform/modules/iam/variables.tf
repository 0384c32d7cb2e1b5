variable "environment" {
  description = "Deployment environment: dev, staging or prod."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "bucket_arns" {
  description = "ARN of each data bucket by kind (videos, code, thumbnails, temp), from the storage module."
  type        = map(string)
}

variable "kms_key_arns" {
  description = "CMKs encrypting bucket objects (empty with SSE-S3)."
  type        = list(string)
  default     = []
}

variable "db_instance_resource_id" {
  description = "DbiResourceId of the RDS instance, for rds-db:connect (IAM database authentication)."
  type        = string
}

variable "operator_principal_arns" {
  description = "IAM principals (SSO permission-set roles, CI roles) allowed to assume the migration, rollback and read-only roles."
  type        = list(string)

  validation {
    condition     = length(var.operator_principal_arns) > 0 && alltrue([for arn in var.operator_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:", arn))])
    error_message = "operator_principal_arns must list at least one IAM principal ARN."
  }
}

variable "migration_db_user" {
  description = "PostgreSQL role (GRANT rds_iam) the migration and rollback roles log in as with IAM tokens."
  type        = string
  default     = "t2m_migration"
}

variable "readonly_db_user" {
  description = "PostgreSQL role (GRANT rds_iam) the read-only role logs in as with IAM tokens."
  type        = string
  default     = "t2m_readonly"
}

variable "db_secret_arn" {
  description = "RDS-managed master user secret the migration and rollback roles read to connect through the proxy."
  type        = string
}

variable "db_kms_key_arn" {
  description = "CMK encrypting the database secret."
  type        = string
}
