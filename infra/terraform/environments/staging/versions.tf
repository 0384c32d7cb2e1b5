terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.70"
    }
  }

  # Partial configuration, completed at init: terraform init -backend-config=backend.hcl (see infra/README.md).
  backend "s3" {}
}
