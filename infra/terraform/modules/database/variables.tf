variable "environment" {
  description = "Deployment environment: dev, staging or prod."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "vpc_id" {
  description = "VPC the database, its proxy and their clients live in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (at least two availability zones) for the instance and the proxy."
  type        = list(string)
}

variable "engine_version" {
  description = "PostgreSQL version. A major version lets RDS pick and auto-upgrade the minor."
  type        = string
  default     = "15"

  validation {
    condition     = can(regex("^15(\\.[0-9]+)?$", var.engine_version))
    error_message = "engine_version must be PostgreSQL 15.x."
  }
}

variable "instance_class" {
  description = "Instance class: db.t3.medium in dev/staging, db.r6g.large in prod."
  type        = string
  default     = "db.t3.medium"
}

variable "allocated_storage_gb" {
  description = "Initial gp3 storage."
  type        = number
  default     = 50
}

variable "max_allocated_storage_gb" {
  description = "Ceiling for storage autoscaling."
  type        = number
  default     = 200
}

variable "multi_az" {
  description = "Standby in a second availability zone (prod)."
  type        = bool
  default     = false
}

variable "backup_retention_days" {
  description = "Automated backup retention, which is also the point-in-time-restore window: 7 in dev, 30 in prod."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be 1..35 (0 would disable backups and point-in-time restore)."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the instance (prod)."
  type        = bool
  default     = false
}

variable "performance_insights_enabled" {
  description = "Performance Insights, encrypted with the database CMK (prod)."
  type        = bool
  default     = false
}

variable "database_name" {
  description = "Database holding the t2m schema and Dagster's storage tables."
  type        = string
  default     = "t2m"
}

variable "master_username" {
  description = "Master user; its password is generated and rotated by RDS in Secrets Manager."
  type        = string
  default     = "t2m_admin"
}

variable "log_retention_days" {
  description = "Retention of the PostgreSQL log groups."
  type        = number
  default     = 365
}

variable "operator_cidr_blocks" {
  description = "Private networks (VPN, the legacy host during the migration) allowed to reach the proxy and the instance on 5432."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.operator_cidr_blocks : can(cidrnetmask(cidr)) && cidr != "0.0.0.0/0"])
    error_message = "operator_cidr_blocks must be IPv4 CIDR blocks narrower than 0.0.0.0/0."
  }
}
