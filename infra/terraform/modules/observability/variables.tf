variable "environment" {
  description = "Deployment environment: dev, staging or prod."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "bucket_names" {
  description = "Data bucket name by kind, from the storage module: request metrics and 5xx alarms."
  type        = map(string)
}

variable "data_event_bucket_arns" {
  description = "Buckets whose object-level calls CloudTrail records (data events)."
  type        = list(string)
}

variable "audit_log_bucket_name" {
  description = "Bucket receiving CloudTrail log files (its policy admits this trail)."
  type        = string
}

variable "cloudtrail_name" {
  description = "Name of the trail; the audit log bucket policy names it too."
  type        = string
}

variable "db_instance_identifier" {
  description = "RDS instance to alarm on."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the Dagster, ECS Exec and CloudTrail log groups."
  type        = number
  default     = 365
}

variable "alarm_email_addresses" {
  description = "E-mail addresses subscribed to the alarm topic (each confirms by mail)."
  type        = list(string)
  default     = []
}

variable "rds_cpu_threshold_percent" {
  description = "Alarm when average RDS CPU stays above this for 15 minutes."
  type        = number
  default     = 80
}

variable "rds_free_storage_threshold_bytes" {
  description = "Alarm when RDS free storage drops below this."
  type        = number
  default     = 10737418240
}

variable "rds_connections_threshold" {
  description = "Alarm when RDS connections stay above this for 15 minutes (the proxy pools to 90% of max_connections)."
  type        = number
  default     = 300
}

variable "s3_5xx_threshold" {
  description = "Alarm when a bucket returns more than this many 5xx errors in 5 minutes."
  type        = number
  default     = 5
}
