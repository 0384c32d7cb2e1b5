# The staging environment. Its differences from the others are the literals in this file.

locals {
  environment     = "staging"
  cloudtrail_name = "${local.environment}-t2m-data-events"
  tags = {
    Project     = "t2m"
    Environment = local.environment
    ManagedBy   = "terraform"
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "replica"
  region = var.replica_region

  default_tags {
    tags = local.tags
  }
}

module "storage" {
  source = "../../modules/storage"

  providers = {
    aws         = aws
    aws.replica = aws.replica
  }

  environment        = local.environment
  sse_algorithm      = "AES256"
  enable_replication = false
  cloudtrail_name    = local.cloudtrail_name
}

module "database" {
  source = "../../modules/database"

  environment                  = local.environment
  vpc_id                       = var.vpc_id
  subnet_ids                   = var.private_subnet_ids
  instance_class               = "db.t3.medium"
  multi_az                     = false
  backup_retention_days        = 7
  deletion_protection          = false
  operator_cidr_blocks         = var.operator_cidr_blocks
  performance_insights_enabled = false
}

module "iam" {
  source = "../../modules/iam"

  environment             = local.environment
  bucket_arns             = module.storage.bucket_arns
  kms_key_arns            = module.storage.kms_key_arns
  db_instance_resource_id = module.database.instance_resource_id
  operator_principal_arns = var.operator_principal_arns
  db_secret_arn           = module.database.master_user_secret_arn
  db_kms_key_arn          = module.database.kms_key_arn
}

module "observability" {
  source = "../../modules/observability"

  environment            = local.environment
  bucket_names           = module.storage.bucket_names
  data_event_bucket_arns = module.storage.data_event_bucket_arns
  audit_log_bucket_name  = module.storage.audit_log_bucket_name
  cloudtrail_name        = local.cloudtrail_name
  db_instance_identifier = module.database.instance_identifier
  alarm_email_addresses  = var.alarm_email_addresses
}

module "render" {
  source = "../../modules/render"

  environment             = local.environment
  vpc_id                  = var.vpc_id
  subnet_ids              = var.render_subnet_ids
  route_table_ids         = var.render_route_table_ids
  image                   = var.image
  temp_bucket_arn         = module.storage.bucket_arns["temp"]
  worker_role_name        = module.iam.pipeline_role_name
  worker_role_arn         = module.iam.pipeline_role_arn
  log_group_name          = module.observability.render_log_group_name
  ecs_exec_log_group_name = module.observability.ecs_exec_log_group_name
  logs_kms_key_arn        = module.observability.kms_key_arn
}

module "dagster" {
  source = "../../modules/dagster"

  environment                 = local.environment
  vpc_id                      = var.vpc_id
  subnet_ids                  = var.private_subnet_ids
  image                       = var.image
  pipeline_role_arn           = module.iam.pipeline_role_arn
  passable_run_role_arns      = [module.iam.migration_role_arn]
  log_group_names             = module.observability.dagster_log_group_names
  ecs_exec_log_group_name     = module.observability.ecs_exec_log_group_name
  logs_kms_key_arn            = module.observability.kms_key_arn
  db_host                     = module.database.proxy_endpoint
  db_port                     = module.database.port
  db_name                     = module.database.database_name
  db_username                 = module.database.master_username
  db_secret_arn               = module.database.master_user_secret_arn
  db_kms_key_arn              = module.database.kms_key_arn
  db_client_security_group_id = module.database.client_security_group_id
  sse_algorithm               = module.storage.sse_algorithm
  s3_kms_key_arn              = module.storage.kms_key_arn
  app_environment             = merge(var.app_environment, module.render.environment)
}
