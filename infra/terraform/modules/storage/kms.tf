# SSE-KMS key for the four buckets when var.sse_algorithm is aws:kms (prod). Principals get kms:Decrypt and
# kms:GenerateDataKey through their IAM policies (modules/iam), scoped with kms:ViaService to S3.
resource "aws_kms_key" "s3" {
  count = local.use_kms ? 1 : 0

  description             = "${var.environment}-t2m S3 bucket encryption"
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

resource "aws_kms_alias" "s3" {
  count = local.use_kms ? 1 : 0

  name          = "alias/${var.environment}-t2m-s3"
  target_key_id = aws_kms_key.s3[0].key_id
}
