variable "environment" {
  description = "Deployment environment: dev, staging or prod. First segment of every bucket name."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "sse_algorithm" {
  description = "Default encryption of the four buckets: AES256 (SSE-S3) or aws:kms (SSE-KMS with a rotated key and bucket keys). Mirrors T2M_SSE_ALGORITHM."
  type        = string
  default     = "AES256"

  validation {
    condition     = contains(["AES256", "aws:kms"], var.sse_algorithm)
    error_message = "sse_algorithm must be AES256 or aws:kms."
  }
}

variable "noncurrent_version_days" {
  description = "Days a noncurrent object version is kept before it expires. Mirrors T2M_NONCURRENT_VERSION_DAYS (Settings.noncurrent_version_days)."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_days >= 1 && var.noncurrent_version_days <= 36500
    error_message = "noncurrent_version_days must be between 1 and 36500."
  }
}

variable "log_retention_days" {
  description = "Days S3 access logs, ALB/CloudTrail log files are kept in the audit log bucket."
  type        = number
  default     = 365
}

variable "enable_replication" {
  description = "Replicate the buckets listed in replicated_kinds to the aws.replica region (prod)."
  type        = bool
  default     = false
}

variable "replicated_kinds" {
  description = "Bucket kinds replicated across regions when enable_replication is true: the data that cannot be regenerated."
  type        = list(string)
  default     = ["videos", "code"]

  validation {
    condition     = alltrue([for kind in var.replicated_kinds : contains(["videos", "code", "thumbnails", "temp"], kind)])
    error_message = "replicated_kinds must name bucket kinds: videos, code, thumbnails, temp."
  }
}

variable "cloudtrail_name" {
  description = "Name of the CloudTrail trail (observability module) allowed to write to the audit log bucket."
  type        = string
}
