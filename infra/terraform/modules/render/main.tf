# The render boundary on ECS: generated scene code runs only here, one Fargate task per render, launched by the
# Dagster run worker through Dagster Pipes (t2m_pipeline/render/ecs.py). The task:
#   - runs the render entrypoint as uid 10001, read-only root filesystem, every capability dropped;
#   - has a task role that can do nothing (no policy allows anything; an inline policy denies everything);
#   - has a security group whose only egress is HTTPS to S3 (through the gateway endpoint below, whose policy
#     admits only the worker's presigned requests for temp/render-* of the temp bucket, and ECR's image layers)
#     and to the interface endpoints Fargate itself needs (ECR to pull the image, CloudWatch Logs for awslogs);
#   - is limited by its task size (CPU, memory, ephemeral storage) and the nofile ulimit.
# No secret, no database, no other bucket is reachable from it.

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

locals {
  prefix         = "${var.environment}-t2m"
  account_id     = data.aws_caller_identity.current.account_id
  region         = data.aws_region.current.name
  family         = "${local.prefix}-render"
  container_name = "render"
  work_dir       = "/t2m-render"
  staging_arn    = "${var.temp_bucket_arn}/temp/render-*"
  cluster_tasks  = "arn:aws:ecs:${local.region}:${local.account_id}:task/${aws_ecs_cluster.render.name}/*"
}

# --- cluster: render tasks apart from the Dagster services --------------------------------------------------------

resource "aws_ecs_cluster" "render" {
  name = local.family

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

resource "aws_ecs_cluster_capacity_providers" "render" {
  cluster_name       = aws_ecs_cluster.render.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
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

# The task role: what generated code could do with the credentials the task metadata endpoint hands out. Nothing.
resource "aws_iam_role" "task" {
  name                 = "${local.family}-task"
  description          = "Render tasks (generated scene code): no permission at all"
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_assume.json
  max_session_duration = 3600
}

data "aws_iam_policy_document" "deny_everything" {
  statement {
    sid       = "DenyEverything"
    effect    = "Deny"
    actions   = ["*"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "task_deny_everything" {
  name   = "deny-everything"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.deny_everything.json
}

# The execution role: the ECS agent pulls the image and ships stdout to CloudWatch Logs. No secret to inject.
resource "aws_iam_role" "execution" {
  name               = "${local.family}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# What the Dagster run worker needs to run renders: start and watch tasks of this family only, pass its two roles,
# read the render log group (Pipes messages).
data "aws_iam_policy_document" "launch_renders" {
  statement {
    sid       = "RunRenderTasks"
    actions   = ["ecs:RunTask"]
    resources = ["arn:aws:ecs:${local.region}:${local.account_id}:task-definition/${local.family}:*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.render.arn]
    }
  }

  statement {
    sid       = "TagRenderTasksAtLaunch"
    actions   = ["ecs:TagResource"]
    resources = [local.cluster_tasks]

    condition {
      test     = "StringEquals"
      variable = "ecs:CreateAction"
      values   = ["RunTask"]
    }
  }

  statement {
    sid       = "WatchAndStopRenderTasks"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask"]
    resources = [local.cluster_tasks]
  }

  statement {
    sid       = "DescribeRenderTaskDefinition"
    actions   = ["ecs:DescribeTaskDefinition"]
    resources = ["*"] # DescribeTaskDefinition supports no resource-level permissions
  }

  statement {
    sid       = "PassRenderRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.task.arn, aws_iam_role.execution.arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  statement {
    sid       = "ReadRenderMessages"
    actions   = ["logs:GetLogEvents", "logs:DescribeLogStreams"]
    resources = ["arn:aws:logs:${local.region}:${local.account_id}:log-group:${var.log_group_name}:*"]
  }
}

resource "aws_iam_role_policy" "worker_launches_renders" {
  name   = "launch-render-tasks"
  role   = var.worker_role_name
  policy = data.aws_iam_policy_document.launch_renders.json
}

# --- network ------------------------------------------------------------------------------------------------------

resource "aws_security_group" "render" {
  #checkov:skip=CKV2_AWS_5:Attached at launch: the worker names it in RunTask's awsvpcConfiguration (T2M_RENDER_SECURITY_GROUPS), which no graph check follows.
  name        = "${local.family}-tasks"
  description = "Render tasks: no ingress; HTTPS to S3 (gateway endpoint) and to ECR and CloudWatch Logs endpoints only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_egress_rule" "render_to_s3" {
  security_group_id = aws_security_group.render.id
  description       = "HTTPS to S3 through the gateway endpoint (staging objects, image layers)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = aws_vpc_endpoint.s3.prefix_list_id
}

resource "aws_vpc_security_group_egress_rule" "render_to_endpoints" {
  count = var.create_interface_endpoints ? 1 : 0

  security_group_id            = aws_security_group.render.id
  description                  = "HTTPS to the ECR and CloudWatch Logs interface endpoints (image pull, awslogs)"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints[0].id
}

resource "aws_security_group" "endpoints" {
  #checkov:skip=CKV2_AWS_5:Attached to the interface endpoints below (security_group_ids), created with the same count.
  count = var.create_interface_endpoints ? 1 : 0

  name        = "${local.family}-endpoints"
  description = "Interface endpoints the render tasks need: HTTPS from render tasks only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_render" {
  count = var.create_interface_endpoints ? 1 : 0

  security_group_id            = aws_security_group.endpoints[0].id
  description                  = "HTTPS from render tasks"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.render.id
}

# Only what a render needs through this endpoint: the worker's presigned requests for staging keys, and the
# image layers ECR serves from S3. Associated with the render subnets' route tables alone.
data "aws_iam_policy_document" "s3_endpoint" {
  statement {
    sid       = "RenderStagingThroughPresignedUrls"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = [local.staging_arn]

    principals {
      type        = "AWS"
      identifiers = [var.worker_role_arn]
    }
  }

  statement {
    sid       = "ImageLayers"
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::prod-${local.region}-starport-layer-bucket/*"]

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.execution.arn]
    }
  }
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${local.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.route_table_ids
  policy            = data.aws_iam_policy_document.s3_endpoint.json
}

resource "aws_vpc_endpoint" "interface" {
  for_each = var.create_interface_endpoints ? toset(["ecr.api", "ecr.dkr", "logs"]) : toset([])

  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = var.subnet_ids
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true
}

# --- the task definition ------------------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "render" {
  family                   = local.family
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }

  volume {
    name = "work"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([{
    name                   = local.container_name
    image                  = var.image
    essential              = true
    user                   = "10001"
    readonlyRootFilesystem = true
    command                = ["python", "-I", "-u", "-m", "t2m_pipeline.render.entrypoint"]
    workingDirectory       = local.work_dir
    environment = [for name, value in {
      HOME                    = "${local.work_dir}/home"
      TMPDIR                  = "/tmp"
      XDG_CACHE_HOME          = "/tmp"
      LANG                    = "C.UTF-8"
      PYTHONDONTWRITEBYTECODE = "1"
      OMP_NUM_THREADS         = "1"
    } : { name = name, value = value }]
    mountPoints = [
      { sourceVolume = "work", containerPath = local.work_dir, readOnly = false },
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
    ]
    linuxParameters = {
      initProcessEnabled = true
      capabilities       = { add = [], drop = ["ALL"] }
    }
    ulimits = [{ name = "nofile", softLimit = var.open_files, hardLimit = var.open_files }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_name
        awslogs-region        = local.region
        awslogs-stream-prefix = local.container_name
      }
    }
  }])
}
