# Logs, metrics, alarms and the audit trail of one environment.

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

locals {
  prefix         = "${var.environment}-t2m"
  account_id     = data.aws_caller_identity.current.account_id
  region         = data.aws_region.current.name
  log_prefix     = "/t2m/${var.environment}"
  cloudtrail_arn = "arn:aws:cloudtrail:${local.region}:${local.account_id}:trail/${var.cloudtrail_name}"
  dagster_logs   = toset(["webserver", "daemon", "code-location", "runs"])
}

resource "aws_kms_key" "observability" {
  description             = "${local.prefix} log groups, CloudTrail and alarm topics"
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
        Sid       = "CloudWatchLogsEncryptsLogGroups"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:aws:logs:${local.region}:${local.account_id}:log-group:${local.log_prefix}/*"
          }
        }
      },
      {
        Sid       = "CloudTrailEncryptsLogFilesAndNotifications"
        Effect    = "Allow"
        Principal = { Service = "cloudtrail.amazonaws.com" }
        Action    = ["kms:GenerateDataKey*", "kms:Decrypt", "kms:DescribeKey"]
        Resource  = "*"
        Condition = {
          StringEquals = { "aws:SourceArn" = local.cloudtrail_arn }
        }
      },
      {
        Sid       = "CloudWatchAlarmsPublishToEncryptedTopic"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = ["kms:GenerateDataKey*", "kms:Decrypt"]
        Resource  = "*"
        Condition = {
          StringEquals = { "aws:SourceAccount" = local.account_id }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "observability" {
  name          = "alias/${local.prefix}-observability"
  target_key_id = aws_kms_key.observability.key_id
}

# --- log groups ---------------------------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "dagster" {
  for_each = local.dagster_logs

  name              = "${local.log_prefix}/dagster/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.observability.arn
}

# Render tasks' stdout: their Dagster Pipes messages, read back by the run worker (t2m_pipeline/render/ecs.py).
resource "aws_cloudwatch_log_group" "render" {
  name              = "${local.log_prefix}/render"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.observability.arn
}

resource "aws_cloudwatch_log_group" "ecs_exec" {
  name              = "${local.log_prefix}/ecs/exec"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.observability.arn
}

resource "aws_cloudwatch_log_group" "cloudtrail" {
  name              = "${local.log_prefix}/cloudtrail"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.observability.arn
}

# --- alarm topic --------------------------------------------------------------------------------------------------

resource "aws_sns_topic" "alarms" {
  name              = "${local.prefix}-alarms"
  kms_master_key_id = aws_kms_key.observability.arn
}

resource "aws_sns_topic_subscription" "alarm_email" {
  for_each = toset(var.alarm_email_addresses)

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.key
}

# --- RDS alarms ---------------------------------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "rds_cpu" {
  alarm_name          = "${local.prefix}-rds-cpu-high"
  alarm_description   = "RDS ${var.db_instance_identifier}: CPU above ${var.rds_cpu_threshold_percent}% for 15 minutes"
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  dimensions          = { DBInstanceIdentifier = var.db_instance_identifier }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.rds_cpu_threshold_percent
  treat_missing_data  = "missing"
  actions_enabled     = true
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "rds_free_storage" {
  alarm_name          = "${local.prefix}-rds-free-storage-low"
  alarm_description   = "RDS ${var.db_instance_identifier}: free storage below ${var.rds_free_storage_threshold_bytes} bytes"
  namespace           = "AWS/RDS"
  metric_name         = "FreeStorageSpace"
  dimensions          = { DBInstanceIdentifier = var.db_instance_identifier }
  statistic           = "Minimum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "LessThanThreshold"
  threshold           = var.rds_free_storage_threshold_bytes
  treat_missing_data  = "missing"
  actions_enabled     = true
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "rds_connections" {
  alarm_name          = "${local.prefix}-rds-connections-high"
  alarm_description   = "RDS ${var.db_instance_identifier}: more than ${var.rds_connections_threshold} connections for 15 minutes"
  namespace           = "AWS/RDS"
  metric_name         = "DatabaseConnections"
  dimensions          = { DBInstanceIdentifier = var.db_instance_identifier }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.rds_connections_threshold
  treat_missing_data  = "missing"
  actions_enabled     = true
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# --- S3 5xx: request metrics (filter EntireBucket) feed the 5xxErrors metric -----------------------------------------

resource "aws_s3_bucket_metric" "entire_bucket" {
  for_each = var.bucket_names

  bucket = each.value
  name   = "EntireBucket"
}

resource "aws_cloudwatch_metric_alarm" "s3_5xx" {
  for_each = var.bucket_names

  alarm_name          = "${local.prefix}-s3-${each.key}-5xx"
  alarm_description   = "S3 ${each.value}: more than ${var.s3_5xx_threshold} server errors in 5 minutes"
  namespace           = "AWS/S3"
  metric_name         = "5xxErrors"
  dimensions          = { BucketName = each.value, FilterId = aws_s3_bucket_metric.entire_bucket[each.key].name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.s3_5xx_threshold
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# --- failed Dagster runs: RUN_FAILURE events printed by run workers (runs) and run monitoring (daemon) --------------

resource "aws_cloudwatch_log_metric_filter" "dagster_failed_runs" {
  for_each = toset(["runs", "daemon"])

  name           = "${local.prefix}-dagster-failed-runs-${each.key}"
  log_group_name = aws_cloudwatch_log_group.dagster[each.key].name
  pattern        = "\"RUN_FAILURE\""

  metric_transformation {
    namespace     = "T2M/${var.environment}/Dagster"
    name          = "FailedRuns"
    value         = "1"
    default_value = "0"
    unit          = "Count"
  }
}

resource "aws_cloudwatch_metric_alarm" "dagster_failed_runs" {
  alarm_name          = "${local.prefix}-dagster-failed-runs"
  alarm_description   = "A Dagster run failed (RUN_FAILURE in ${local.log_prefix}/dagster/runs or /daemon)"
  namespace           = "T2M/${var.environment}/Dagster"
  metric_name         = "FailedRuns"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]

  depends_on = [aws_cloudwatch_log_metric_filter.dagster_failed_runs]
}

# --- CloudTrail: S3 data events of the data buckets (+ management events), validated, encrypted, multi-region -------

resource "aws_sns_topic" "cloudtrail" {
  name              = "${local.prefix}-cloudtrail-deliveries"
  kms_master_key_id = aws_kms_key.observability.arn
}

data "aws_iam_policy_document" "cloudtrail_topic" {
  statement {
    sid       = "CloudTrailPublishes"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.cloudtrail.arn]

    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = [local.cloudtrail_arn]
    }
  }
}

resource "aws_sns_topic_policy" "cloudtrail" {
  arn    = aws_sns_topic.cloudtrail.arn
  policy = data.aws_iam_policy_document.cloudtrail_topic.json
}

data "aws_iam_policy_document" "cloudtrail_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = [local.cloudtrail_arn]
    }
  }
}

resource "aws_iam_role" "cloudtrail_logs" {
  name               = "${local.prefix}-cloudtrail-logs"
  assume_role_policy = data.aws_iam_policy_document.cloudtrail_assume.json
}

data "aws_iam_policy_document" "cloudtrail_logs" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.cloudtrail.arn}:log-stream:*"]
  }
}

resource "aws_iam_role_policy" "cloudtrail_logs" {
  name   = "write-cloudtrail-log-group"
  role   = aws_iam_role.cloudtrail_logs.id
  policy = data.aws_iam_policy_document.cloudtrail_logs.json
}

resource "aws_cloudtrail" "this" {
  name                          = var.cloudtrail_name
  s3_bucket_name                = var.audit_log_bucket_name
  s3_key_prefix                 = "cloudtrail"
  is_multi_region_trail         = true
  include_global_service_events = true
  enable_log_file_validation    = true
  kms_key_id                    = aws_kms_key.observability.arn
  cloud_watch_logs_group_arn    = "${aws_cloudwatch_log_group.cloudtrail.arn}:*"
  cloud_watch_logs_role_arn     = aws_iam_role.cloudtrail_logs.arn
  sns_topic_name                = aws_sns_topic.cloudtrail.arn

  event_selector {
    read_write_type           = "All"
    include_management_events = true

    data_resource {
      type   = "AWS::S3::Object"
      values = [for arn in var.data_event_bucket_arns : "${arn}/"]
    }
  }

  depends_on = [aws_sns_topic_policy.cloudtrail, aws_iam_role_policy.cloudtrail_logs]
}
