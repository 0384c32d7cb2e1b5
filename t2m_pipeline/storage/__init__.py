"""S3: key layout, bucket settings, uploads with checksums, presigned URLs, error mapping."""
