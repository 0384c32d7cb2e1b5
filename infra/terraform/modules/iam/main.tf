# Least-privilege roles of the platform. Object access is scoped to key prefixes of the architecture's S3 layout:
#   users/*   every job's code, videos, thumbnails and uploads
#   temp/*    scratch (expires after 7 days)
#   legacy/*  legacy files no job claims (written by the migration)
# Only the rollback role may delete, and only there; the migration role carries an explicit deny.

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

locals {
  prefix      = "${var.environment}-t2m"
  account_id  = data.aws_caller_identity.current.account_id
  region      = data.aws_region.current.name
  bucket_arns = [for kind in sort(keys(var.bucket_arns)) : var.bucket_arns[kind]]

  pipeline_object_arns  = flatten([for arn in local.bucket_arns : ["${arn}/users/*", "${arn}/temp/*"]])
  migration_object_arns = flatten([for arn in local.bucket_arns : ["${arn}/users/*", "${arn}/legacy/*"]])
  all_object_arns       = [for arn in local.bucket_arns : "${arn}/*"]

  db_user_arn_prefix = "arn:aws:rds-db:${local.region}:${local.account_id}:dbuser:${var.db_instance_resource_id}"
}

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

data "aws_iam_policy_document" "operators_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = var.operator_principal_arns
    }
  }
}

data "aws_iam_policy_document" "migration_assume" {
  source_policy_documents = [data.aws_iam_policy_document.operators_assume.json]

  # Migration backfills may also run as Dagster ECS run tasks (task role override).
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

# --- pipeline: Dagster code location and run tasks ----------------------------------------------------------------

data "aws_iam_policy_document" "pipeline" {
  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = local.bucket_arns

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["users/*", "temp/*"]
    }
  }

  statement {
    sid = "ReadWriteOwnPrefixes"
    actions = [
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:GetObjectAttributes",
      "s3:GetObjectTagging",
      "s3:PutObject",
      "s3:PutObjectTagging",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = local.pipeline_object_arns
  }

  statement {
    sid       = "CleanUpScratch"
    actions   = ["s3:DeleteObject"]
    resources = ["${var.bucket_arns["temp"]}/temp/*"]
  }

  # Audits and `t2m doctor` compare the live bucket settings with bucket_settings.declared_buckets().
  statement {
    sid = "ReadBucketSettings"
    actions = [
      "s3:GetBucketLocation",
      "s3:GetBucketVersioning",
      "s3:GetEncryptionConfiguration",
      "s3:GetLifecycleConfiguration",
      "s3:GetBucketPublicAccessBlock",
      "s3:GetBucketPolicy",
    ]
    resources = local.bucket_arns
  }

  dynamic "statement" {
    for_each = length(var.kms_key_arns) > 0 ? [1] : []

    content {
      sid       = "UseBucketKeys"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = var.kms_key_arns

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "pipeline" {
  name                 = "${local.prefix}-pipeline"
  description          = "Dagster code location and run tasks: read/write users/* and temp/* of the t2m buckets"
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_assume.json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "pipeline" {
  name   = "pipeline-buckets"
  role   = aws_iam_role.pipeline.id
  policy = data.aws_iam_policy_document.pipeline.json
}

# --- migration: copies legacy files in, never deletes -------------------------------------------------------------

data "aws_iam_policy_document" "migration" {
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = local.bucket_arns
  }

  statement {
    sid = "WriteMigratedObjects"
    actions = [
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:GetObjectAttributes",
      "s3:GetObjectTagging",
      "s3:PutObject",
      "s3:PutObjectTagging",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = local.migration_object_arns
  }

  statement {
    sid       = "NeverDelete"
    effect    = "Deny"
    actions   = ["s3:DeleteObject", "s3:DeleteObjectVersion"]
    resources = local.all_object_arns
  }

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

  statement {
    sid       = "ConnectAsMigrationUser"
    actions   = ["rds-db:connect"]
    resources = ["${local.db_user_arn_prefix}/${var.migration_db_user}"]
  }

  dynamic "statement" {
    for_each = length(var.kms_key_arns) > 0 ? [1] : []

    content {
      sid       = "UseBucketKeys"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = var.kms_key_arns

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "migration" {
  name                 = "${local.prefix}-migration"
  description          = "Legacy migration (t2m migrate redis/files/verify): writes users/* and legacy/*, cannot delete"
  assume_role_policy   = data.aws_iam_policy_document.migration_assume.json
  max_session_duration = 43200
}

resource "aws_iam_role_policy" "migration" {
  name   = "migration-write-no-delete"
  role   = aws_iam_role.migration.id
  policy = data.aws_iam_policy_document.migration.json
}

# --- migration rollback: the only role that deletes, only what the migration writes -------------------------------

data "aws_iam_policy_document" "migration_rollback" {
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = local.bucket_arns
  }

  statement {
    sid = "DeleteMigratedVersions"
    actions = [
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:GetObjectTagging",
      "s3:DeleteObject",
      "s3:DeleteObjectVersion",
    ]
    resources = local.migration_object_arns
  }

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

  statement {
    sid       = "ConnectAsMigrationUser"
    actions   = ["rds-db:connect"]
    resources = ["${local.db_user_arn_prefix}/${var.migration_db_user}"]
  }

  dynamic "statement" {
    for_each = length(var.kms_key_arns) > 0 ? [1] : []

    content {
      sid       = "UseBucketKeys"
      actions   = ["kms:Decrypt"]
      resources = var.kms_key_arns

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "migration_rollback" {
  name                 = "${local.prefix}-migration-rollback"
  description          = "t2m migrate rollback --batch ID: deletes migrated object versions under users/* and legacy/*"
  assume_role_policy   = data.aws_iam_policy_document.operators_assume.json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "migration_rollback" {
  name   = "migration-rollback-delete"
  role   = aws_iam_role.migration_rollback.id
  policy = data.aws_iam_policy_document.migration_rollback.json
}

# --- read-only: support and analysts ------------------------------------------------------------------------------

data "aws_iam_policy_document" "read_only" {
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation"]
    resources = local.bucket_arns
  }

  statement {
    sid       = "ReadObjects"
    actions   = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes", "s3:GetObjectTagging"]
    resources = local.all_object_arns
  }

  statement {
    sid       = "ConnectAsReadOnlyUser"
    actions   = ["rds-db:connect"]
    resources = ["${local.db_user_arn_prefix}/${var.readonly_db_user}"]
  }

  dynamic "statement" {
    for_each = length(var.kms_key_arns) > 0 ? [1] : []

    content {
      sid       = "DecryptObjects"
      actions   = ["kms:Decrypt"]
      resources = var.kms_key_arns

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "read_only" {
  name                 = "${local.prefix}-read-only"
  description          = "Read t2m objects and connect to PostgreSQL as the read-only user"
  assume_role_policy   = data.aws_iam_policy_document.operators_assume.json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "read_only" {
  name   = "read-only"
  role   = aws_iam_role.read_only.id
  policy = data.aws_iam_policy_document.read_only.json
}
