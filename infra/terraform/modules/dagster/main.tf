# Dagster on ECS Fargate: webserver and daemon services, the code location server (gRPC, found through Cloud Map),
# and the task definition EcsRunLauncher starts once per run. infra/dagster/dagster.yaml and workspace.yaml read the
# environment set here.

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

locals {
  prefix             = "${var.environment}-t2m"
  account_id         = data.aws_caller_identity.current.account_id
  region             = data.aws_region.current.name
  dagster_home       = "/opt/dagster/dagster_home"
  code_location_port = 4000
  webserver_port     = 3000
  run_family         = "${local.prefix}-dagster-run"
  namespace          = "${var.environment}.t2m.internal"

  environment = [for name, value in merge(
    {
      DAGSTER_HOME                = local.dagster_home
      DAGSTER_PG_HOST             = var.db_host
      DAGSTER_PG_PORT             = tostring(var.db_port)
      DAGSTER_PG_DB               = var.db_name
      DAGSTER_PG_USERNAME         = var.db_username
      DAGSTER_RUN_TASK_DEFINITION = local.run_family
      DAGSTER_CODE_LOCATION_HOST  = "code-location.${local.namespace}"
      DAGSTER_CODE_LOCATION_PORT  = tostring(local.code_location_port)
      T2M_ENV                     = var.environment
      AWS_REGION                  = local.region
      AWS_ACCOUNT_ID              = local.account_id
      T2M_SSE_ALGORITHM           = var.sse_algorithm
      T2M_KMS_KEY_ID              = var.s3_kms_key_arn == null ? "" : var.s3_kms_key_arn
      T2M_DATABASE_URL            = "postgresql+psycopg://${var.db_username}@${var.db_host}:${var.db_port}/${var.db_name}?sslmode=require"
      HOME                        = "/tmp"
    },
    var.app_environment,
  ) : { name = name, value = value }]

  # The password never leaves Secrets Manager except into the container: libpq reads PGPASSWORD, Dagster
  # DAGSTER_PG_PASSWORD.
  secrets = [
    { name = "DAGSTER_PG_PASSWORD", valueFrom = "${var.db_secret_arn}:password::" },
    { name = "PGPASSWORD", valueFrom = "${var.db_secret_arn}:password::" },
  ]

}

# --- cluster ------------------------------------------------------------------------------------------------------

resource "aws_ecs_cluster" "this" {
  name = "${local.prefix}-dagster"

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  configuration {
    execute_command_configuration {
      kms_key_id = var.logs_kms_key_arn
      logging    = "OVERRIDE"

      log_configuration {
        cloud_watch_encryption_enabled = true
        cloud_watch_log_group_name     = var.ecs_exec_log_group_name
      }
    }
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_service_discovery_private_dns_namespace" "this" {
  name        = local.namespace
  description = "Service discovery of ${local.prefix} Dagster"
  vpc         = var.vpc_id
}

resource "aws_service_discovery_service" "code_location" {
  name = "code-location"

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.this.id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }
}

# --- security groups ----------------------------------------------------------------------------------------------
# tasks: webserver, daemon and every run (runs inherit the daemon's network configuration). No ingress: the UI is
# reached through ECS Exec port forwarding (README). code_location: gRPC from tasks only.

resource "aws_security_group" "tasks" {
  name        = "${local.prefix}-dagster-tasks"
  description = "Dagster webserver, daemon and run tasks"
  vpc_id      = var.vpc_id
}

resource "aws_security_group" "code_location" {
  name        = "${local.prefix}-dagster-code-location"
  description = "Dagster code location gRPC server"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to AWS APIs (S3, ECS, SSM, logs) and the LLM endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_code_location" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "gRPC to the code location server"
  ip_protocol                  = "tcp"
  from_port                    = local.code_location_port
  to_port                      = local.code_location_port
  referenced_security_group_id = aws_security_group.code_location.id
}

resource "aws_vpc_security_group_ingress_rule" "code_location_from_tasks" {
  security_group_id            = aws_security_group.code_location.id
  description                  = "gRPC from the Dagster webserver and daemon"
  ip_protocol                  = "tcp"
  from_port                    = local.code_location_port
  to_port                      = local.code_location_port
  referenced_security_group_id = aws_security_group.tasks.id
}

resource "aws_vpc_security_group_egress_rule" "code_location_https" {
  security_group_id = aws_security_group.code_location.id
  description       = "HTTPS to AWS APIs (S3, logs) for sensors and schedules"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# --- roles --------------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# Execution role: pulls the image, ships logs, injects the database password.
resource "aws_iam_role" "execution" {
  name               = "${local.prefix}-dagster-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "ReadDatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.db_secret_arn]
  }

  statement {
    sid       = "DecryptDatabaseSecret"
    actions   = ["kms:Decrypt"]
    resources = [var.db_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "inject-database-secret"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

locals {
  cluster_task_arns = "arn:aws:ecs:${local.region}:${local.account_id}:task/${aws_ecs_cluster.this.name}/*"
}

# What every Dagster control-plane process needs: inspect and stop run tasks (terminate, run monitoring) and be
# reachable by ECS Exec.
data "aws_iam_policy_document" "control_plane" {
  statement {
    sid       = "InspectAndStopRunTasks"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask"]
    resources = [local.cluster_task_arns]
  }

  statement {
    sid       = "DescribeTaskDefinitions"
    actions   = ["ecs:DescribeTaskDefinition"]
    resources = ["*"] # DescribeTaskDefinition supports no resource-level permissions
  }

  statement {
    sid = "EcsExecChannels"
    actions = [
      "ssmmessages:CreateControlChannel",
      "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel",
      "ssmmessages:OpenDataChannel",
    ]
    resources = ["*"] # ssmmessages supports no resource-level permissions
  }

  statement {
    sid       = "EcsExecSessionKey"
    actions   = ["kms:Decrypt"]
    resources = [var.logs_kms_key_arn]
  }

  statement {
    sid       = "EcsExecSessionLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:aws:logs:${local.region}:${local.account_id}:log-group:${var.ecs_exec_log_group_name}:*"]
  }

  statement {
    sid       = "EcsExecFindLogGroup"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["*"] # DescribeLogGroups supports no resource-level permissions
  }
}

resource "aws_iam_role" "webserver" {
  name               = "${local.prefix}-dagster-webserver"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "webserver" {
  name   = "dagster-control-plane"
  role   = aws_iam_role.webserver.id
  policy = data.aws_iam_policy_document.control_plane.json
}

# The daemon runs EcsRunLauncher: one Fargate task per run from the run task definition below.
data "aws_iam_policy_document" "daemon" {
  source_policy_documents = [data.aws_iam_policy_document.control_plane.json]

  statement {
    sid       = "RunRunTasks"
    actions   = ["ecs:RunTask"]
    resources = ["arn:aws:ecs:${local.region}:${local.account_id}:task-definition/${local.run_family}:*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }

  statement {
    sid       = "TagRunTasksAtLaunch"
    actions   = ["ecs:TagResource"]
    resources = [local.cluster_task_arns]

    condition {
      test     = "StringEquals"
      variable = "ecs:CreateAction"
      values   = ["RunTask"]
    }
  }

  statement {
    sid       = "PassRunRoles"
    actions   = ["iam:PassRole"]
    resources = concat([var.pipeline_role_arn, aws_iam_role.execution.arn], var.passable_run_role_arns)

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  statement {
    sid       = "ReadOwnNetworkConfiguration"
    actions   = ["ec2:DescribeNetworkInterfaces"]
    resources = ["*"] # DescribeNetworkInterfaces supports no resource-level permissions
  }
}

resource "aws_iam_role" "daemon" {
  name               = "${local.prefix}-dagster-daemon"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "daemon" {
  name   = "dagster-run-launcher"
  role   = aws_iam_role.daemon.id
  policy = data.aws_iam_policy_document.daemon.json
}

# --- task definitions ---------------------------------------------------------------------------------------------

locals {
  # EcsRunLauncher resolves DAGSTER_RUN_TASK_DEFINITION to a revision when the process starts: a new run revision
  # changes the webserver and daemon task definitions too, so they restart and launch runs from it.
  run_revision = [{ name = "DAGSTER_RUN_TASK_REVISION", value = tostring(aws_ecs_task_definition.run.revision) }]

  container_base = {
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    environment            = local.environment
    secrets                = local.secrets
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    linuxParameters        = { initProcessEnabled = true }
  }
}

resource "aws_ecs_task_definition" "webserver" {
  family                   = "${local.prefix}-dagster-webserver"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.webserver_cpu
  memory                   = var.webserver_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.webserver.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_base, {
    name         = "webserver"
    environment  = concat(local.environment, local.run_revision)
    command      = ["dagster-webserver", "--host", "0.0.0.0", "--port", tostring(local.webserver_port), "--workspace", "${local.dagster_home}/workspace.yaml"]
    portMappings = [{ containerPort = local.webserver_port, protocol = "tcp" }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_names["webserver"]
        awslogs-region        = local.region
        awslogs-stream-prefix = "webserver"
      }
    }
  })])
}

resource "aws_ecs_task_definition" "daemon" {
  family                   = "${local.prefix}-dagster-daemon"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.daemon_cpu
  memory                   = var.daemon_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.daemon.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_base, {
    name        = "daemon"
    environment = concat(local.environment, local.run_revision)
    command     = ["dagster-daemon", "run", "--workspace", "${local.dagster_home}/workspace.yaml"]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_names["daemon"]
        awslogs-region        = local.region
        awslogs-stream-prefix = "daemon"
      }
    }
  })])
}

resource "aws_ecs_task_definition" "code_location" {
  family                   = "${local.prefix}-dagster-code-location"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.code_location_cpu
  memory                   = var.code_location_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = var.pipeline_role_arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_base, {
    name         = "code-location"
    command      = ["dagster", "code-server", "start", "--host", "0.0.0.0", "--port", tostring(local.code_location_port), "--module-name", "t2m_pipeline.definitions", "--location-name", "t2m_pipeline"]
    portMappings = [{ containerPort = local.code_location_port, protocol = "tcp" }]
    healthCheck = {
      command     = ["CMD-SHELL", "dagster api grpc-health-check --port ${local.code_location_port}"]
      interval    = 30
      timeout     = 10
      retries     = 3
      startPeriod = 120
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_names["code-location"]
        awslogs-region        = local.region
        awslogs-stream-prefix = "code-location"
      }
    }
  })])
}

# The run worker. EcsRunLauncher (task_definition: {env: DAGSTER_RUN_TASK_DEFINITION}, container_name: run) starts
# one task of the latest revision per run and overrides only the command; cpu/memory per run via ecs/* tags.
resource "aws_ecs_task_definition" "run" {
  family                   = local.run_family
  skip_destroy             = true # earlier revisions stay ACTIVE for runs still in flight
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.run_cpu
  memory                   = var.run_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = var.pipeline_role_arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  ephemeral_storage {
    size_in_gib = var.run_ephemeral_storage_gib
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_base, {
    name = "run"
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_names["runs"]
        awslogs-region        = local.region
        awslogs-stream-prefix = "run"
      }
    }
  })])
}

# --- services -----------------------------------------------------------------------------------------------------

resource "aws_ecs_service" "code_location" {
  name                   = "code-location"
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.code_location.arn
  desired_count          = 1
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  enable_execute_command = false
  propagate_tags         = "SERVICE"

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.code_location.id, var.db_client_security_group_id]
    assign_public_ip = false
  }

  service_registries {
    registry_arn = aws_service_discovery_service.code_location.arn
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
}

resource "aws_ecs_service" "webserver" {
  name                   = "webserver"
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.webserver.arn
  desired_count          = 1
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  enable_execute_command = true
  propagate_tags         = "SERVICE"

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.tasks.id, var.db_client_security_group_id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  depends_on = [aws_ecs_service.code_location]
}

# Exactly one daemon: stop the old task before starting the new one.
resource "aws_ecs_service" "daemon" {
  name                               = "daemon"
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.daemon.arn
  desired_count                      = 1
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  enable_execute_command             = false
  propagate_tags                     = "SERVICE"
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.tasks.id, var.db_client_security_group_id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  depends_on = [aws_ecs_service.code_location, aws_ecs_task_definition.run]
}
