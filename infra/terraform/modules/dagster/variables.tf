variable "environment" {
  description = "Deployment environment: dev, staging or prod."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "vpc_id" {
  description = "VPC of the ECS tasks (the database's VPC)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the ECS tasks; they reach AWS APIs through NAT or VPC endpoints."
  type        = list(string)
}

variable "image" {
  description = "Container image (ECR URI with an immutable tag or digest) holding t2m_pipeline, dagster-webserver and infra/dagster/*.yaml in DAGSTER_HOME."
  type        = string
}

variable "pipeline_role_arn" {
  description = "Task role of the code location and of every run task (iam module)."
  type        = string
}

variable "passable_run_role_arns" {
  description = "Further task roles a run may use through the ecs/task_overrides tag, e.g. the migration role."
  type        = list(string)
  default     = []
}

variable "log_group_names" {
  description = "Log group per Dagster process (webserver, daemon, code-location, runs), from the observability module."
  type        = map(string)
}

variable "ecs_exec_log_group_name" {
  description = "Log group recording ECS Exec sessions."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "CMK of the log groups; also encrypts ECS Exec sessions."
  type        = string
}

variable "db_host" {
  description = "RDS Proxy endpoint."
  type        = string
}

variable "db_port" {
  description = "PostgreSQL port."
  type        = number
  default     = 5432
}

variable "db_name" {
  description = "Database name."
  type        = string
}

variable "db_username" {
  description = "PostgreSQL user of the applications (the RDS master user)."
  type        = string
}

variable "db_secret_arn" {
  description = "RDS-managed Secrets Manager secret with the user's password (JSON key password)."
  type        = string
}

variable "db_kms_key_arn" {
  description = "CMK encrypting the database secret."
  type        = string
}

variable "db_client_security_group_id" {
  description = "Security group that lets tasks reach the RDS Proxy."
  type        = string
}

variable "sse_algorithm" {
  description = "T2M_SSE_ALGORITHM of the tasks (storage module output)."
  type        = string
}

variable "s3_kms_key_arn" {
  description = "T2M_KMS_KEY_ID of the tasks (null with SSE-S3)."
  type        = string
  default     = null
}

variable "app_environment" {
  description = "Further plain environment variables of every Dagster process and run (no secrets), e.g. T2M_CODE_GENERATOR."
  type        = map(string)
  default     = {}
}

variable "webserver_cpu" {
  description = "Fargate CPU units of the webserver."
  type        = number
  default     = 512
}

variable "webserver_memory" {
  description = "Fargate memory (MiB) of the webserver."
  type        = number
  default     = 1024
}

variable "daemon_cpu" {
  description = "Fargate CPU units of the daemon."
  type        = number
  default     = 512
}

variable "daemon_memory" {
  description = "Fargate memory (MiB) of the daemon."
  type        = number
  default     = 1024
}

variable "code_location_cpu" {
  description = "Fargate CPU units of the code location server."
  type        = number
  default     = 512
}

variable "code_location_memory" {
  description = "Fargate memory (MiB) of the code location server."
  type        = number
  default     = 1024
}

variable "run_cpu" {
  description = "Fargate CPU units of a run task (manim renders; override per run with the ecs/cpu tag)."
  type        = number
  default     = 2048
}

variable "run_memory" {
  description = "Fargate memory (MiB) of a run task (override per run with the ecs/memory tag)."
  type        = number
  default     = 8192
}

variable "run_ephemeral_storage_gib" {
  description = "Ephemeral storage of a run task, for renders in /tmp."
  type        = number
  default     = 50
}
