output "bucket_names" {
  description = "Bucket name per kind (videos, code, thumbnails, temp): config.Settings.buckets."
  value       = { for kind, bucket in aws_s3_bucket.this : kind => bucket.id }
}

output "bucket_arns" {
  description = "Bucket ARN per kind."
  value       = { for kind, bucket in aws_s3_bucket.this : kind => bucket.arn }
}

output "replica_bucket_arns" {
  description = "Replica bucket ARN per replicated kind (empty without replication)."
  value       = { for kind, bucket in aws_s3_bucket.replica : kind => bucket.arn }
}

output "sse_algorithm" {
  description = "Default encryption of the data buckets, for T2M_SSE_ALGORITHM."
  value       = var.sse_algorithm
}

output "kms_key_arn" {
  description = "CMK of the data buckets (null with SSE-S3), for T2M_KMS_KEY_ID and IAM grants."
  value       = local.use_kms ? aws_kms_key.s3[0].arn : null
}

output "kms_key_arns" {
  description = "Every CMK protecting bucket data (primary and replica), for IAM grants."
  value       = concat([for key in aws_kms_key.s3 : key.arn], [for key in aws_kms_key.replica : key.arn])
}

output "audit_log_bucket_name" {
  description = "Bucket receiving S3 access logs and CloudTrail log files (ready once its policy is in place)."
  value       = aws_s3_bucket.audit_logs.id
  depends_on  = [aws_s3_bucket_policy.audit_logs]
}

output "data_event_bucket_arns" {
  description = "Every data bucket whose object-level API calls CloudTrail records (primaries and replicas)."
  value       = concat([for bucket in aws_s3_bucket.this : bucket.arn], [for bucket in aws_s3_bucket.replica : bucket.arn])
}
