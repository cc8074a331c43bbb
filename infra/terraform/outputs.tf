output "bucket_name" {
  description = "The segment bucket (the chart's storage.s3.bucket)."
  value       = aws_s3_bucket.segments.id
}

output "bucket_arn" {
  description = "ARN of the segment bucket."
  value       = aws_s3_bucket.segments.arn
}

output "table_name" {
  description = "The metadata table, \"<table_prefix>kafscale\"."
  value       = aws_dynamodb_table.meta.name
}

output "table_arn" {
  description = "ARN of the metadata table."
  value       = aws_dynamodb_table.meta.arn
}

output "role_arns" {
  description = "IAM role per tier (ingest, fetch, indexer, init): the chart's serviceAccounts.<tier>.annotations.\"eks.amazonaws.com/role-arn\" with IRSA."
  value       = { for tier, role in aws_iam_role.tier : tier => role.arn }
}

output "helm_values" {
  description = "The chart values this module determines (storage and ServiceAccount annotations), to merge into a Helm release."
  value = {
    storage = {
      s3       = { bucket = aws_s3_bucket.segments.id, prefix = var.s3_prefix }
      dynamodb = { tablePrefix = var.table_prefix }
      awsRegion = data.aws_region.current.name
    }
    serviceAccounts = {
      for tier, role in aws_iam_role.tier : tier => {
        create      = true
        name        = var.service_accounts[tier]
        annotations = var.oidc_provider_arn == null ? {} : { "eks.amazonaws.com/role-arn" = role.arn }
      }
    }
  }
}
