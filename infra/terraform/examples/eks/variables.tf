variable "region" {
  description = "AWS region of the EKS cluster, the bucket and the table."
  type        = string
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster (with an IAM OIDC provider for IRSA)."
  type        = string
}

variable "name" {
  description = "kafscale cluster name (prefixes the IAM roles, names the bucket \"<name>-segments\")."
  type        = string
  default     = "kafscale"
}

variable "table_prefix" {
  description = "Table name prefix: the table is \"<table_prefix>kafscale\"."
  type        = string
  default     = ""
}

variable "namespace" {
  description = "Kubernetes namespace of the release."
  type        = string
  default     = "kafscale"
}

variable "release_name" {
  description = "Helm release name; keep \"kafscale\" in it so the ServiceAccounts are \"<release>-<tier>\"."
  type        = string
  default     = "kafscale"
  validation {
    condition     = strcontains(var.release_name, "kafscale")
    error_message = "release_name must contain \"kafscale\" (the chart's ServiceAccount names depend on it)."
  }
}

variable "image_repository" {
  description = "Container image built from the repository's Dockerfile, pushed to a registry the cluster can pull from."
  type        = string
}

variable "image_tag" {
  description = "Image tag."
  type        = string
  default     = "0.1.0"
}

variable "autoscaling_mode" {
  description = "hpa (needs prometheus-adapter with the chart's rules), keda (needs KEDA) or none."
  type        = string
  default     = "hpa"
  validation {
    condition     = contains(["hpa", "keda", "none"], var.autoscaling_mode)
    error_message = "autoscaling_mode: hpa, keda or none."
  }
}

variable "prometheus_address" {
  description = "Prometheus URL that KEDA queries (autoscaling_mode = keda)."
  type        = string
  default     = "http://prometheus-operated.monitoring.svc:9090"
}

variable "prometheus_operator" {
  description = "Create the ServiceMonitor and PrometheusRule (needs the Prometheus Operator's CRDs)."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the table (and the non-empty bucket) from terraform destroy."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags of every AWS resource."
  type        = map(string)
  default     = {}
}
