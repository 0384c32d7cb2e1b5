# PostgreSQL 15 on RDS: the t2m metadata schema and Dagster's run/event/schedule storage.
# Encrypted at rest (CMK), TLS enforced by the parameter group, reached only through RDS Proxy from tasks that carry
# the client security group. The master password is generated, stored and rotated by RDS in Secrets Manager.

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

locals {
  identifier = "${var.environment}-t2m-postgres"
  port       = 5432
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
}

resource "aws_kms_key" "rds" {
  description             = "${var.environment}-t2m RDS storage, Performance Insights, master secret and logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersKeyThroughIam"
        Effect    = "Allow"
        Principal = { AWS = "arn:aws:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsEncryptsRdsLogGroups"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:aws:logs:${local.region}:${local.account_id}:log-group:/aws/rds/instance/${local.identifier}/*"
          }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "rds" {
  name          = "alias/${var.environment}-t2m-rds"
  target_key_id = aws_kms_key.rds.key_id
}

resource "aws_db_subnet_group" "this" {
  name        = local.identifier
  description = "Private subnets of ${local.identifier}"
  subnet_ids  = var.subnet_ids
}

# Network paths on :5432: client SG -> proxy SG -> db SG for applications; client SG -> db SG for IAM-authenticated
# sessions (rds-db:connect goes to the instance endpoint); operator CIDRs (VPN, legacy host during the migration) ->
# proxy and instance. Nothing else reaches the database.

resource "aws_security_group" "db" {
  name        = "${local.identifier}-db"
  description = "RDS instance ${local.identifier}: PostgreSQL from the RDS Proxy only"
  vpc_id      = var.vpc_id
}

resource "aws_security_group" "proxy" {
  #checkov:skip=CKV2_AWS_5:Attached to aws_db_proxy.this (vpc_security_group_ids), a resource type this graph check does not follow.
  name        = "${local.identifier}-proxy"
  description = "RDS Proxy of ${local.identifier}: PostgreSQL from client tasks, to the instance"
  vpc_id      = var.vpc_id
}

resource "aws_security_group" "client" {
  #checkov:skip=CKV2_AWS_5:Attached outside this module: the dagster module puts it on every ECS task that uses PostgreSQL; the graph check does not follow it across modules.
  name        = "${local.identifier}-client"
  description = "Attach to tasks that use PostgreSQL; allows them to reach the RDS Proxy"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "db_from_proxy" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the RDS Proxy"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.proxy.id
}

resource "aws_vpc_security_group_ingress_rule" "proxy_from_clients" {
  security_group_id            = aws_security_group.proxy.id
  description                  = "PostgreSQL from client tasks"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.client.id
}

resource "aws_vpc_security_group_ingress_rule" "db_from_clients" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL with IAM authentication from client tasks"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.client.id
}

resource "aws_vpc_security_group_ingress_rule" "proxy_from_operators" {
  for_each = toset(var.operator_cidr_blocks)

  security_group_id = aws_security_group.proxy.id
  description       = "PostgreSQL from operator network ${each.key}"
  ip_protocol       = "tcp"
  from_port         = local.port
  to_port           = local.port
  cidr_ipv4         = each.key
}

resource "aws_vpc_security_group_ingress_rule" "db_from_operators" {
  for_each = toset(var.operator_cidr_blocks)

  security_group_id = aws_security_group.db.id
  description       = "PostgreSQL with IAM authentication from operator network ${each.key}"
  ip_protocol       = "tcp"
  from_port         = local.port
  to_port           = local.port
  cidr_ipv4         = each.key
}

resource "aws_vpc_security_group_egress_rule" "proxy_to_db" {
  security_group_id            = aws_security_group.proxy.id
  description                  = "PostgreSQL to the RDS instance"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.db.id
}

resource "aws_vpc_security_group_egress_rule" "client_to_proxy" {
  security_group_id            = aws_security_group.client.id
  description                  = "PostgreSQL to the RDS Proxy"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.proxy.id
}

resource "aws_vpc_security_group_egress_rule" "client_to_db" {
  security_group_id            = aws_security_group.client.id
  description                  = "PostgreSQL with IAM authentication to the RDS instance"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.db.id
}

resource "aws_db_parameter_group" "this" {
  name        = "${local.identifier}-pg15"
  family      = "postgres15"
  description = "TLS-only PostgreSQL 15 with statement logging for ${local.identifier}"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "ssl_min_protocol_version"
    value = "TLSv1.2"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  parameter {
    name  = "log_connections"
    value = "1"
  }

  parameter {
    name  = "log_disconnections"
    value = "1"
  }

  lifecycle {
    create_before_destroy = true
  }
}

# Created before the instance so exported logs land encrypted and expire.
resource "aws_cloudwatch_log_group" "postgresql" {
  for_each = toset(["postgresql", "upgrade"])

  name              = "/aws/rds/instance/${local.identifier}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.rds.arn
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name               = "${local.identifier}-monitoring"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  #checkov:skip=CKV_AWS_157:Multi-AZ follows var.multi_az: on in prod; dev/staging run single-AZ to halve cost and restore from backups.
  #checkov:skip=CKV_AWS_293:Deletion protection follows var.deletion_protection: on in prod; dev/staging are torn down and rebuilt (a final snapshot is still taken).
  #checkov:skip=CKV_AWS_353:Performance Insights follows var.performance_insights_enabled: on in prod, off in dev/staging (enhanced monitoring stays on).
  identifier     = local.identifier
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class
  port           = local.port

  db_name                       = var.database_name
  username                      = var.master_username
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.rds.arn

  allocated_storage     = var.allocated_storage_gb
  max_allocated_storage = var.max_allocated_storage_gb
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.rds.arn

  multi_az               = var.multi_az
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  ca_cert_identifier     = "rds-ca-rsa2048-g1"

  parameter_group_name                = aws_db_parameter_group.this.name
  iam_database_authentication_enabled = true

  # Automated backups are what point-in-time restore replays: PITR covers the whole retention window.
  backup_retention_period   = var.backup_retention_days
  backup_window             = "03:00-04:00"
  maintenance_window        = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot     = true
  delete_automated_backups  = false
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${local.identifier}-final"

  performance_insights_enabled          = var.performance_insights_enabled
  performance_insights_kms_key_id       = var.performance_insights_enabled ? aws_kms_key.rds.arn : null
  performance_insights_retention_period = var.performance_insights_enabled ? 7 : null
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.monitoring.arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]

  auto_minor_version_upgrade = true
  apply_immediately          = false

  depends_on = [aws_cloudwatch_log_group.postgresql, aws_iam_role_policy_attachment.monitoring]
}

# RDS Proxy: connection pooling for Dagster run tasks (one process per run), TLS required, authenticating to the
# instance with the RDS-managed master secret.

data "aws_iam_policy_document" "proxy_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["rds.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "proxy" {
  name               = "${local.identifier}-proxy"
  assume_role_policy = data.aws_iam_policy_document.proxy_assume.json
}

data "aws_iam_policy_document" "proxy" {
  statement {
    sid       = "ReadMasterSecret"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [aws_db_instance.this.master_user_secret[0].secret_arn]
  }

  statement {
    sid       = "DecryptMasterSecret"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.rds.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "proxy" {
  name   = "read-master-secret"
  role   = aws_iam_role.proxy.id
  policy = data.aws_iam_policy_document.proxy.json
}

resource "aws_db_proxy" "this" {
  name                   = local.identifier
  engine_family          = "POSTGRESQL"
  role_arn               = aws_iam_role.proxy.arn
  vpc_subnet_ids         = var.subnet_ids
  vpc_security_group_ids = [aws_security_group.proxy.id]
  require_tls            = true
  idle_client_timeout    = 1800
  debug_logging          = false

  auth {
    description               = "RDS-managed master user secret"
    auth_scheme               = "SECRETS"
    iam_auth                  = "DISABLED"
    client_password_auth_type = "POSTGRES_SCRAM_SHA_256"
    secret_arn                = aws_db_instance.this.master_user_secret[0].secret_arn
  }

  depends_on = [aws_iam_role_policy.proxy]
}

resource "aws_db_proxy_default_target_group" "this" {
  db_proxy_name = aws_db_proxy.this.name

  connection_pool_config {
    max_connections_percent      = 90
    max_idle_connections_percent = 50
    connection_borrow_timeout    = 120
  }
}

resource "aws_db_proxy_target" "this" {
  db_proxy_name          = aws_db_proxy.this.name
  target_group_name      = aws_db_proxy_default_target_group.this.name
  db_instance_identifier = aws_db_instance.this.identifier
}
