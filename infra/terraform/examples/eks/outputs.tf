output "ingest_bootstrap" {
  description = "Producers' bootstrap address (inside the cluster)."
  value       = "${var.release_name}-ingest.${var.namespace}.svc:9092"
}

output "fetch_bootstrap" {
  description = "Consumers' bootstrap address (inside the cluster)."
  value       = "${var.release_name}-fetch.${var.namespace}.svc:9092"
}

output "bucket_name" {
  description = "The segment bucket."
  value       = module.kafscale.bucket_name
}

output "table_name" {
  description = "The metadata table."
  value       = module.kafscale.table_name
}

output "role_arns" {
  description = "IAM role per tier."
  value       = module.kafscale.role_arns
}
