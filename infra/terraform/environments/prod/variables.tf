variable "region" {
  description = "Home region of the environment (AWS_REGION of the platform)."
  type        = string
  default     = "us-east-1"
}

variable "replica_region" {
  description = "Second region holding the cross-region replicas (used when replication is enabled)."
  type        = string
  default     = "us-west-2"
}

variable "vpc_id" {
  description = "Existing VPC of the environment (network baseline)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets in at least two availability zones, with a route to AWS APIs (NAT or VPC endpoints)."
  type        = list(string)
}

variable "render_subnet_ids" {
  description = "Private subnets of the render tasks alone: no NAT or internet route (they reach S3 through the render module's endpoint)."
  type        = list(string)
}

variable "render_route_table_ids" {
  description = "Route tables of render_subnet_ids."
  type        = list(string)
}

variable "image" {
  description = "t2m_pipeline container image (ECR URI with an immutable tag or digest)."
  type        = string
}

variable "operator_principal_arns" {
  description = "IAM principals allowed to assume the migration, rollback and read-only roles."
  type        = list(string)
}

variable "alarm_email_addresses" {
  description = "E-mail addresses subscribed to the alarm topic."
  type        = list(string)
  default     = []
}

variable "app_environment" {
  description = "Further plain environment variables of the Dagster processes and runs (no secrets)."
  type        = map(string)
  default     = {}
}

variable "operator_cidr_blocks" {
  description = "Private networks (VPN, the legacy host during the migration) allowed to reach PostgreSQL."
  type        = list(string)
  default     = []
}
