variable "environment" {
  description = "Deployment environment: dev, staging or prod."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "vpc_id" {
  description = "VPC of the render tasks."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the render tasks only: no NAT or internet route; S3 is reached through this module's gateway endpoint."
  type        = list(string)
}

variable "route_table_ids" {
  description = "Route tables of var.subnet_ids (the S3 gateway endpoint is associated with them and with nothing else)."
  type        = list(string)
}

variable "create_interface_endpoints" {
  description = "Create the ECR (image pull) and CloudWatch Logs (awslogs) interface endpoints the render subnets need; false when the VPC already has them."
  type        = bool
  default     = true
}

variable "image" {
  description = "The t2m_pipeline image (the same as Dagster's): it carries the render entrypoint."
  type        = string
}

variable "temp_bucket_arn" {
  description = "The temp bucket: render staging objects live under temp/render-*/ (storage module output)."
  type        = string
}

variable "worker_role_name" {
  description = "Role of the Dagster run workers (iam module's pipeline role): it launches render tasks and signs their URLs."
  type        = string
}

variable "worker_role_arn" {
  description = "ARN of var.worker_role_name: the only principal whose signed requests the S3 endpoint admits."
  type        = string
}

variable "log_group_name" {
  description = "Log group of the render tasks' stdout: Pipes messages (observability module output)."
  type        = string
}

variable "ecs_exec_log_group_name" {
  description = "Log group of ECS Exec sessions (the render cluster never enables them; declared for its settings)."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "CMK of the log groups."
  type        = string
}

variable "cpu" {
  description = "Fargate CPU units of a render task (its CPU limit)."
  type        = number
  default     = 2048
}

variable "memory" {
  description = "Fargate memory (MiB) of a render task (its memory limit)."
  type        = number
  default     = 4096
}

variable "ephemeral_storage_gib" {
  description = "Task storage (GiB) behind /t2m-render and /tmp (its disk limit; 21 is Fargate's minimum)."
  type        = number
  default     = 21
}

variable "open_files" {
  description = "nofile ulimit of the render container."
  type        = number
  default     = 1024
}
