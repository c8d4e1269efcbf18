# Terraform and provider versions for reid3dsl's AWS infrastructure (see README.md beside this file).

terraform {
  # 1.11: ephemeral resources and write-only arguments keep the generated passwords out of the state.
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      project = var.name
    }
  }
}
