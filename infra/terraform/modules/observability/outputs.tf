output "dagster_log_group_names" {
  description = "Dagster log group per process: webserver, daemon, code-location, runs."
  value       = { for name, group in aws_cloudwatch_log_group.dagster : name => group.name }
}

output "render_log_group_name" {
  description = "Log group of the render tasks (their Pipes messages)."
  value       = aws_cloudwatch_log_group.render.name
}

output "ecs_exec_log_group_name" {
  description = "Log group recording ECS Exec sessions."
  value       = aws_cloudwatch_log_group.ecs_exec.name
}

output "kms_key_arn" {
  description = "CMK of the log groups, CloudTrail and the alarm topics."
  value       = aws_kms_key.observability.arn
}

output "alarm_topic_arn" {
  description = "SNS topic every alarm notifies."
  value       = aws_sns_topic.alarms.arn
}

output "cloudtrail_arn" {
  description = "ARN of the data-event trail."
  value       = aws_cloudtrail.this.arn
}
