locals {
  bucket_name = coalesce(var.bucket_name, "${var.name}-segments")
  table_name  = "${var.table_prefix}kafscale"
  tags        = merge({ "app.kubernetes.io/part-of" = "kafscale", "kafscale.io/cluster" = var.name }, var.tags)
}

# --- segment objects -------------------------------------------------------------------------
# Objects are immutable and written create-only (If-None-Match); the indexer decides when one
# is no longer referenced and deletes it. So: no versioning (a deleted segment must really go),
# and no expiration rule (S3 must never delete an object an index entry still points at).
resource "aws_s3_bucket" "segments" {
  #checkov:skip=CKV_AWS_18:access logs would write one log object per segment request; enable S3 server access logging to a central log bucket outside this module if required
  #checkov:skip=CKV_AWS_21:versioning would keep every segment the indexer deletes; objects are immutable and created only once
  #checkov:skip=CKV_AWS_144:cross-region replication is a disaster-recovery choice outside the module (and needs versioning)
  #checkov:skip=CKV2_AWS_62:nothing consumes bucket event notifications
  #checkov:skip=CKV_AWS_145:KMS is optional (var.kms_key_arn); without it the bucket uses SSE-S3
  bucket        = local.bucket_name
  force_destroy = !var.deletion_protection
  tags          = local.tags
}

resource "aws_s3_bucket_ownership_controls" "segments" {
  bucket = aws_s3_bucket.segments.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "segments" {
  bucket                  = aws_s3_bucket.segments.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "segments" {
  bucket = aws_s3_bucket.segments.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "segments" {
  bucket = aws_s3_bucket.segments.id
  # The only rule: parts of an upload that never completed (a gateway killed mid-upload).
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.segments.arn,
      "${aws_s3_bucket.segments.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "segments" {
  bucket = aws_s3_bucket.segments.id
  policy = data.aws_iam_policy_document.tls_only.json
  # A bucket policy is refused while the public access block is being applied.
  depends_on = [aws_s3_bucket_public_access_block.segments]
}

# --- metadata table ----------------------------------------------------------------------------
# Exactly the table `kafscale admin init` would create (docs/architecture.md, "DynamoDB table
# design"): string keys pk (HASH) and sk (RANGE), no secondary indexes, on-demand billing.
# `admin init` checks this key schema and refuses a table with another.
resource "aws_dynamodb_table" "meta" {
  #checkov:skip=CKV_AWS_119:KMS is optional (var.kms_key_arn); without it DynamoDB encrypts with its AWS-owned key
  name                        = local.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  range_key                   = "sk"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "pk"
    type = "S"
  }
  attribute {
    name = "sk"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = var.kms_key_arn != null
    kms_key_arn = var.kms_key_arn
  }

  tags = local.tags
}
