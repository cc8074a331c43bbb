variable "name" {
  description = "Cluster name: prefixes the IAM roles and, unless bucket_name is set, names the bucket."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$", var.name))
    error_message = "name: 3-40 characters, lower-case letters, digits and hyphens."
  }
}

variable "bucket_name" {
  description = "S3 bucket for segment objects (default: \"<name>-segments\")."
  type        = string
  default     = null
}

variable "s3_prefix" {
  description = "Key prefix of this cluster's objects (the chart's storage.s3.prefix); the IAM policies are limited to it."
  type        = string
  default     = ""
}

variable "table_prefix" {
  description = "The table is \"<table_prefix>kafscale\" (the chart's storage.dynamodb.tablePrefix)."
  type        = string
  default     = ""
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the bucket and the table (default: SSE-S3 and DynamoDB's AWS-owned key). The tiers' roles get use of it through S3 and DynamoDB only."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "DynamoDB deletion protection, and whether the bucket refuses to be destroyed while it holds objects."
  type        = bool
  default     = true
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which S3 aborts an incomplete multipart upload (the only lifecycle rule: retention is the indexer's job)."
  type        = number
  default     = 1
}

variable "kubernetes_namespace" {
  description = "Namespace of the Helm release."
  type        = string
  default     = "kafscale"
}

variable "service_accounts" {
  description = "ServiceAccount names of the chart's tiers (the chart names them <fullname>-<tier>; fullname is the release name, plus \"-kafscale\" unless it contains it)."
  type = object({
    ingest  = string
    fetch   = string
    indexer = string
    init    = string
  })
  default = {
    ingest  = "kafscale-ingest"
    fetch   = "kafscale-fetch"
    indexer = "kafscale-indexer"
    init    = "kafscale-init"
  }
}

variable "oidc_provider_arn" {
  description = "IRSA: ARN of the EKS cluster's IAM OIDC provider. Leave null to use EKS Pod Identity instead."
  type        = string
  default     = null
}

variable "oidc_issuer_url" {
  description = "IRSA: the cluster's OIDC issuer URL (with or without https://). Required with oidc_provider_arn."
  type        = string
  default     = null
}

variable "pod_identity_cluster_name" {
  description = "EKS Pod Identity: the cluster to associate the roles with (creates aws_eks_pod_identity_association per tier). Leave null for IRSA."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags of every resource."
  type        = map(string)
  default     = {}
}
