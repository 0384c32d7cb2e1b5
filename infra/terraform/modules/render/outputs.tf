output "task_definition_family" {
  description = "Family of the render task definition (T2M_RENDER_TASK_DEFINITION)."
  value       = aws_ecs_task_definition.render.family
}

output "cluster_name" {
  description = "ECS cluster the render tasks run in (T2M_RENDER_CLUSTER)."
  value       = aws_ecs_cluster.render.name
}

output "security_group_id" {
  description = "Security group of the render tasks (T2M_RENDER_SECURITY_GROUPS)."
  value       = aws_security_group.render.id
}

output "task_role_arn" {
  description = "The render task role: it can do nothing."
  value       = aws_iam_role.task.arn
}

output "environment" {
  description = "Settings of the Dagster processes that select this backend (merged into their app_environment)."
  value = {
    T2M_RENDER_BACKEND         = "ecs"
    T2M_RENDER_CLUSTER         = aws_ecs_cluster.render.name
    T2M_RENDER_TASK_DEFINITION = aws_ecs_task_definition.render.family
    T2M_RENDER_CONTAINER       = local.container_name
    T2M_RENDER_SUBNETS         = join(",", var.subnet_ids)
    T2M_RENDER_SECURITY_GROUPS = aws_security_group.render.id
  }
}
