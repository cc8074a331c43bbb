# The kafscale module: the S3 bucket that holds every segment object, the DynamoDB table that
# holds everything else, and one IAM role per tier (and one for the admin-init Job) with only
# the S3 and DynamoDB actions that tier's code calls, assumable by the Helm chart's
# ServiceAccounts through IRSA or EKS Pod Identity. README.md lists variables and outputs.
terraform {
  required_version = ">= 1.5.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40.0"
    }
  }
}
