# The four data buckets. Every setting here mirrors t2m_pipeline/storage/bucket_settings.py (the declared source that
# bootstrap and the audits compare to); t2m_pipeline_tests/infra/test_terraform_consistency.py keeps them equal.

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

locals {
  # config.BUCKET_KINDS, in order.
  bucket_kinds = ["videos", "code", "thumbnails", "temp"]
  account_id   = data.aws_caller_identity.current.account_id
  region       = data.aws_region.current.name
  use_kms      = var.sse_algorithm == "aws:kms"
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is enabled per environment (prod: videos and code, replication.tf); thumbnails and temp are regenerable, dev/staging data is disposable.
  #checkov:skip=CKV_AWS_145:Default encryption follows var.sse_algorithm: SSE-KMS with a rotated CMK in prod, SSE-S3 (AES256) in dev/staging by design (T2M_SSE_ALGORITHM).
  for_each = toset(local.bucket_kinds)

  # config.bucket_name(): {env}-t2m-{kind}-{region}-{account_id}
  bucket        = "${var.environment}-t2m-${each.key}-${local.region}-${local.account_id}"
  force_destroy = false
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = toset(local.bucket_kinds)

  bucket = aws_s3_bucket.this[each.key].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = toset(local.bucket_kinds)

  bucket = aws_s3_bucket.this[each.key].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.sse_algorithm
      kms_master_key_id = local.use_kms ? aws_kms_key.s3[0].arn : null
    }
    bucket_key_enabled = local.use_kms
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each = toset(local.bucket_kinds)

  bucket                  = aws_s3_bucket.this[each.key].id
  block_public_acls       = true
  ignore_public_acls      = true
  block_public_policy     = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = toset(local.bucket_kinds)

  bucket = aws_s3_bucket.this[each.key].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# bucket_settings.tls_only_policy(): the standard `Bool aws:SecureTransport=false` deny, statement for statement, so
# the stored policy is the declared one that doctor and the audits compare to.
data "aws_iam_policy_document" "tls_only" {
  for_each = toset(local.bucket_kinds)

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this[each.key].arn, "${aws_s3_bucket.this[each.key].arn}/*"]

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

resource "aws_s3_bucket_policy" "this" {
  for_each = toset(local.bucket_kinds)

  bucket = aws_s3_bucket.this[each.key].id
  policy = data.aws_iam_policy_document.tls_only[each.key].json

  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_logging" "this" {
  for_each = toset(local.bucket_kinds)

  bucket        = aws_s3_bucket.this[each.key].id
  target_bucket = aws_s3_bucket.audit_logs.id
  target_prefix = "s3-access-logs/${aws_s3_bucket.this[each.key].id}/"
}

resource "aws_s3_bucket_notification" "this" {
  for_each = toset(local.bucket_kinds)

  bucket      = aws_s3_bucket.this[each.key].id
  eventbridge = true
}

# Lifecycle: bucket_settings.lifecycle_rules(kind, noncurrent_version_days), rule for rule, plus the Terraform-only
# Intelligent-Tiering transition of videos (VIDEOS_INTELLIGENT_TIERING_DAYS).

resource "aws_s3_bucket_lifecycle_configuration" "temp" {
  bucket = aws_s3_bucket.this["temp"].id

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

  rule {
    id     = "expire-temp-objects"
    status = "Enabled"

    filter {}

    expiration {
      days = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "videos" {
  bucket = aws_s3_bucket.this["videos"].id

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

  rule {
    id     = "videos-intelligent-tiering"
    status = "Enabled"

    filter {}

    transition {
      days          = 30
      storage_class = "INTELLIGENT_TIERING"
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "standard" {
  for_each = toset(["code", "thumbnails"])

  bucket = aws_s3_bucket.this[each.key].id

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

  depends_on = [aws_s3_bucket_versioning.this]
}
