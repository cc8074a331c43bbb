# One IAM role per tier, each allowed exactly the S3 and DynamoDB actions that tier's code
# sends (tests/infra/test_terraform.py derives them from the store backends and compares):
#
#   ingest, fetch  Both gateways run the same code (src/gateway.rs): either serves Produce
#                  and Fetch (clients derive features from the whole API table, see
#                  docs/architecture.md), so both write segments and read them.
#                  S3: PutObject (single and multipart, create-only), GetObject (ranged reads,
#                  HeadObject), DeleteObject (the losing copy of a hedged upload; DeleteObjects
#                  is authorised per key by the same action), AbortMultipartUpload.
#                  DynamoDB: GetItem, Query, UpdateItem (every put), DeleteItem (topic and group
#                  deletion), ConditionCheckItem (lease checks inside TransactWriteItems, which
#                  has no IAM action of its own: each item is authorised by its own action).
#   indexer        S3: ListBucket (limited to the segment prefix) and DeleteObject, for garbage
#                  collection only (segments no partition references, orphans); it never
#                  reads or writes segment data (the gateways move the bytes).
#                  DynamoDB: GetItem, Query, UpdateItem, ConditionCheckItem (the lease fencing
#                  check of every commit), DeleteItem (index entries that retention and
#                  DeleteRecords move below a partition's log start, commit records and
#                  deleted topics' rows that garbage collection removes).
#   init           `kafscale admin init` against a table Terraform created: DescribeTable (key
#                  schema check), GetItem + UpdateItem (the cluster settings item). It is not
#                  allowed CreateTable or CreateBucket: this module owns the table and bucket.
#
# s3:ListBucket is a bucket-level action: it is granted on the bucket, only for listings under
# the segment prefix (local.bucket_actions says which actions go there); every other S3 action
# is granted on the objects under the prefix. Only the indexer lists. (Without ListBucket S3
# answers a read of a missing key with 403 rather than 404; the gateways never read a key that
# may be missing.)
locals {
  tier_actions = {
    ingest = {
      s3       = ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
      dynamodb = ["dynamodb:ConditionCheckItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"]
    }
    fetch = {
      s3       = ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
      dynamodb = ["dynamodb:ConditionCheckItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"]
    }
    indexer = {
      s3       = ["s3:DeleteObject", "s3:ListBucket"]
      dynamodb = ["dynamodb:ConditionCheckItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"]
    }
    init = {
      s3       = []
      dynamodb = ["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:UpdateItem"]
    }
  }

  bucket_actions = ["s3:ListBucket"]
  objects_arn    = "${aws_s3_bucket.segments.arn}/${var.s3_prefix}*"
  issuer      = var.oidc_issuer_url == null ? null : trimprefix(var.oidc_issuer_url, "https://")
}

data "aws_iam_policy_document" "tier" {
  for_each = local.tier_actions

  dynamic "statement" {
    for_each = length(setsubtract(each.value.s3, local.bucket_actions)) > 0 ? [setsubtract(each.value.s3, local.bucket_actions)] : []
    content {
      sid       = "SegmentObjects"
      actions   = statement.value
      resources = [local.objects_arn]
    }
  }

  dynamic "statement" {
    for_each = length(setintersection(each.value.s3, local.bucket_actions)) > 0 ? [setintersection(each.value.s3, local.bucket_actions)] : []
    content {
      sid       = "ListSegments"
      actions   = statement.value
      resources = [aws_s3_bucket.segments.arn]
      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${var.s3_prefix}segments/*"]
      }
    }
  }

  statement {
    sid       = "MetadataTable"
    actions   = each.value.dynamodb
    resources = [aws_dynamodb_table.meta.arn]
  }

  # With a customer-managed key, S3 and DynamoDB use it on the caller's behalf.
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [1]
    content {
      sid       = "KmsThroughStorageServices"
      actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values = [
          "s3.${data.aws_region.current.name}.amazonaws.com",
          "dynamodb.${data.aws_region.current.name}.amazonaws.com",
        ]
      }
    }
  }
}

data "aws_region" "current" {}

data "aws_iam_policy_document" "assume" {
  for_each = local.tier_actions

  dynamic "statement" {
    for_each = var.oidc_provider_arn == null ? [] : [1]
    content {
      sid     = "Irsa"
      actions = ["sts:AssumeRoleWithWebIdentity"]
      principals {
        type        = "Federated"
        identifiers = [var.oidc_provider_arn]
      }
      condition {
        test     = "StringEquals"
        variable = "${local.issuer}:sub"
        values   = ["system:serviceaccount:${var.kubernetes_namespace}:${var.service_accounts[each.key]}"]
      }
      condition {
        test     = "StringEquals"
        variable = "${local.issuer}:aud"
        values   = ["sts.amazonaws.com"]
      }
    }
  }

  dynamic "statement" {
    for_each = var.pod_identity_cluster_name == null ? [] : [1]
    content {
      sid     = "EksPodIdentity"
      actions = ["sts:AssumeRole", "sts:TagSession"]
      principals {
        type        = "Service"
        identifiers = ["pods.eks.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "tier" {
  for_each = local.tier_actions

  name                 = "${var.name}-${each.key}"
  description          = "kafscale ${each.key} tier of cluster ${var.name}"
  assume_role_policy   = data.aws_iam_policy_document.assume[each.key].json
  max_session_duration = 3600
  tags                 = local.tags

  lifecycle {
    precondition {
      condition     = var.oidc_provider_arn != null || var.pod_identity_cluster_name != null
      error_message = "Set oidc_provider_arn (IRSA) or pod_identity_cluster_name (EKS Pod Identity)."
    }
    precondition {
      condition     = var.oidc_provider_arn == null || var.oidc_issuer_url != null
      error_message = "oidc_issuer_url is required with oidc_provider_arn."
    }
  }
}

resource "aws_iam_role_policy" "tier" {
  for_each = local.tier_actions

  name   = "kafscale-${each.key}"
  role   = aws_iam_role.tier[each.key].id
  policy = data.aws_iam_policy_document.tier[each.key].json
}

resource "aws_eks_pod_identity_association" "tier" {
  for_each = var.pod_identity_cluster_name == null ? {} : local.tier_actions

  cluster_name    = var.pod_identity_cluster_name
  namespace       = var.kubernetes_namespace
  service_account = var.service_accounts[each.key]
  role_arn        = aws_iam_role.tier[each.key].arn
  tags            = local.tags
}
