# Cross-region replication (prod): videos and code, the data that cannot be regenerated, are copied to replica
# buckets in the aws.replica region, encrypted there with a regional CMK. Deletes (delete markers) replicate too,
# so a rollback in the primary is mirrored; noncurrent versions stay recoverable on both sides.

data "aws_region" "replica" {
  provider = aws.replica
}

locals {
  replicated_kinds = var.enable_replication ? toset(var.replicated_kinds) : toset([])
  replica_region   = data.aws_region.replica.name
}

resource "aws_kms_key" "replica" {
  count    = var.enable_replication ? 1 : 0
  provider = aws.replica

  description             = "${var.environment}-t2m S3 replica encryption"
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
    ]
  })
}

resource "aws_kms_alias" "replica" {
  count    = var.enable_replication ? 1 : 0
  provider = aws.replica

  name          = "alias/${var.environment}-t2m-s3-replica"
  target_key_id = aws_kms_key.replica[0].key_id
}

resource "aws_s3_bucket" "replica" {
  #checkov:skip=CKV_AWS_18:Replica buckets are written only by S3 replication; their access is recorded by the multi-region CloudTrail data events (observability module).
  #checkov:skip=CKV_AWS_144:This bucket is itself the cross-region replication destination.
  for_each = local.replicated_kinds
  provider = aws.replica

  bucket        = "${var.environment}-t2m-${each.key}-replica-${local.replica_region}-${local.account_id}"
  force_destroy = false
}

resource "aws_s3_bucket_versioning" "replica" {
  for_each = local.replicated_kinds
  provider = aws.replica

  bucket = aws_s3_bucket.replica[each.key].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "replica" {
  for_each = local.replicated_kinds
  provider = aws.replica

  bucket = aws_s3_bucket.replica[each.key].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.replica[0].arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "replica" {
  for_each = local.replicated_kinds
  provider = aws.replica

  bucket                  = aws_s3_bucket.replica[each.key].id
  block_public_acls       = true
  ignore_public_acls      = true
  block_public_policy     = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "replica" {
  for_each = local.replicated_kinds
  provider = aws.replica

  bucket = aws_s3_bucket.replica[each.key].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_notification" "replica" {
  for_each = local.replicated_kinds
  provider = aws.replica

  bucket      = aws_s3_bucket.replica[each.key].id
  eventbridge = true
}

data "aws_iam_policy_document" "replica_tls_only" {
  for_each = local.replicated_kinds

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.replica[each.key].arn, "${aws_s3_bucket.replica[each.key].arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "replica" {
  for_each = local.replicated_kinds
  provider = aws.replica

  bucket = aws_s3_bucket.replica[each.key].id
  policy = data.aws_iam_policy_document.replica_tls_only[each.key].json

  depends_on = [aws_s3_bucket_public_access_block.replica]
}

resource "aws_s3_bucket_lifecycle_configuration" "replica" {
  for_each = local.replicated_kinds
  provider = aws.replica

  bucket = aws_s3_bucket.replica[each.key].id

  rule {
    id     = "abort-incomplete-multipart"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.replica]
}

data "aws_iam_policy_document" "replication_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "replication" {
  count = var.enable_replication ? 1 : 0

  name               = "${var.environment}-t2m-s3-replication"
  assume_role_policy = data.aws_iam_policy_document.replication_assume.json
}

data "aws_iam_policy_document" "replication" {
  count = var.enable_replication ? 1 : 0

  statement {
    sid       = "ReadSourceConfiguration"
    actions   = ["s3:GetReplicationConfiguration", "s3:ListBucket"]
    resources = [for kind in local.replicated_kinds : aws_s3_bucket.this[kind].arn]
  }

  statement {
    sid = "ReadSourceVersions"
    actions = [
      "s3:GetObjectVersionForReplication",
      "s3:GetObjectVersionAcl",
      "s3:GetObjectVersionTagging",
    ]
    resources = [for kind in local.replicated_kinds : "${aws_s3_bucket.this[kind].arn}/*"]
  }

  statement {
    sid       = "WriteReplicas"
    actions   = ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"]
    resources = [for replica in aws_s3_bucket.replica : "${replica.arn}/*"]
  }

  dynamic "statement" {
    for_each = local.use_kms ? [1] : []

    content {
      sid       = "DecryptSource"
      actions   = ["kms:Decrypt"]
      resources = [aws_kms_key.s3[0].arn]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${local.region}.amazonaws.com"]
      }
    }
  }

  statement {
    sid       = "EncryptReplicas"
    actions   = ["kms:Encrypt", "kms:GenerateDataKey"]
    resources = [for key in aws_kms_key.replica : key.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.replica_region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "replication" {
  count = var.enable_replication ? 1 : 0

  name   = "replicate-${var.environment}-t2m-buckets"
  role   = aws_iam_role.replication[0].id
  policy = data.aws_iam_policy_document.replication[0].json
}

resource "aws_s3_bucket_replication_configuration" "this" {
  for_each = local.replicated_kinds

  role   = aws_iam_role.replication[0].arn
  bucket = aws_s3_bucket.this[each.key].id

  rule {
    id     = "replicate-${each.key}"
    status = "Enabled"

    filter {}

    delete_marker_replication {
      status = "Enabled"
    }

    source_selection_criteria {
      sse_kms_encrypted_objects {
        status = "Enabled"
      }
    }

    destination {
      bucket = aws_s3_bucket.replica[each.key].arn

      encryption_configuration {
        replica_kms_key_id = aws_kms_key.replica[0].arn
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.this, aws_s3_bucket_versioning.replica]
}
