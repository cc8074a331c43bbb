# Example root module: kafscale on an existing EKS cluster. Creates the bucket, the table and
# the per-tier IAM roles (the module in ../..), then installs the Helm chart (../../../helm/
# kafscale) with the module's outputs as values, the tiers' ServiceAccounts bound to their
# roles through IRSA. docs/deploy.md walks through it.
#
#   terraform init
#   terraform apply -var cluster_name=my-eks -var name=kafscale-prod
terraform {
  required_version = ">= 1.5.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40.0"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.17"
    }
  }
}

provider "aws" {
  region = var.region
}

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_eks_cluster_auth" "this" {
  name = var.cluster_name
}

data "aws_iam_openid_connect_provider" "this" {
  url = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
}

provider "helm" {
  kubernetes {
    host                   = data.aws_eks_cluster.this.endpoint
    cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
    token                  = data.aws_eks_cluster_auth.this.token
  }
}

locals {
  # The chart's fullname is the release name when it contains "kafscale", so its
  # ServiceAccounts are "<release>-<tier>".
  service_accounts = { for tier in ["ingest", "fetch", "indexer", "init"] : tier => "${var.release_name}-${tier}" }
}

module "kafscale" {
  source = "../.."

  name                 = var.name
  table_prefix         = var.table_prefix
  kubernetes_namespace = var.namespace
  service_accounts     = local.service_accounts
  oidc_provider_arn    = data.aws_iam_openid_connect_provider.this.arn
  oidc_issuer_url      = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
  deletion_protection  = var.deletion_protection
  tags                 = var.tags
}

resource "helm_release" "kafscale" {
  name             = var.release_name
  chart            = "${path.module}/../../../helm/kafscale"
  namespace        = var.namespace
  create_namespace = true
  # The admin-init hook Job must finish before the release counts as installed.
  wait    = true
  timeout = 900

  values = [
    yamlencode(module.kafscale.helm_values),
    yamlencode({
      image = { repository = var.image_repository, tag = var.image_tag }
      autoscaling = {
        mode              = var.autoscaling_mode
        prometheusAddress = var.prometheus_address
      }
      monitoring = {
        serviceMonitor = { enabled = var.prometheus_operator }
        prometheusRule = { enabled = var.prometheus_operator }
      }
    }),
  ]
}
