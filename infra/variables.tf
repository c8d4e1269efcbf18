# Inputs of reid3dsl's AWS infrastructure. Only bucket_name has no default; ssh_cidrs should be set to
# the addresses you run `ray up` from.

variable "region" {
  description = "AWS region of every resource (and of the Ray cluster)."
  type        = string
  default     = "us-west-2"
}

variable "name" {
  description = "Prefix of resource names; also names the private DNS zone (<name>.internal)."
  type        = string
  default     = "reid3dsl"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name: expected 2-31 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "bucket_name" {
  description = "Globally unique S3 bucket for shards (shards/), checkpoints (checkpoints/) and MLflow artifacts (mlflow/)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name: expected 3-63 lowercase letters, digits, dots or dashes."
  }
}

variable "vpc_id" {
  description = "VPC of the cluster and MLflow; null: the region's default VPC."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Subnets (at least two availability zones, for the database); empty: every subnet of the VPC. Ray nodes use the first."
  type        = list(string)
  default     = []
}

variable "assign_public_ip" {
  description = "Give the MLflow task a public address so it can pull its image (true in a VPC without NAT, e.g. the default VPC). Inbound traffic stays limited by its security group."
  type        = bool
  default     = true
}

variable "ssh_cidrs" {
  description = "CIDR blocks allowed to reach the Ray nodes by SSH (where `ray up`, `ray dashboard` and `ray attach` run)."
  type        = list(string)
  default     = []
}

variable "head_instance_type" {
  description = "Instance type of the Ray head (CPU: it runs the driver, the dashboard and the autoscaler)."
  type        = string
  default     = "m6i.2xlarge"
}

variable "worker_instance_type" {
  description = "Instance type of the autoscaling GPU workers (p4d.24xlarge: 8x A100; p5.48xlarge: 8x H100; g6e.48xlarge: 8x L40S)."
  type        = string
  default     = "p4d.24xlarge"
}

variable "worker_max_nodes" {
  description = "Most GPU worker nodes the autoscaler may start."
  type        = number
  default     = 4
}

variable "ami_id" {
  description = "AMI of the Ray nodes (Docker and an NVIDIA driver >= 580 for CUDA 13); null: the newest AWS Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)."
  type        = string
  default     = null
}

variable "image_tag" {
  description = "Tag under which both images (node and MLflow) were pushed, e.g. the commit; resolved to digests, which the manifests and the MLflow task use. null (first apply, nothing pushed yet): no MLflow service and no image in cluster_env."
  type        = string
  default     = null

  validation {
    condition     = var.image_tag == null || (can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest")
    error_message = "image_tag: expected a docker tag other than \"latest\" (e.g. the commit: git rev-parse --short=12 HEAD)."
  }
}

variable "mlflow_cpu" {
  description = "Fargate CPU units of the MLflow server (1024 = 1 vCPU)."
  type        = number
  default     = 1024
}

variable "mlflow_memory" {
  description = "Fargate memory (MiB) of the MLflow server."
  type        = number
  default     = 2048
}

variable "db_instance_class" {
  description = "RDS instance class of MLflow's PostgreSQL backend."
  type        = string
  default     = "db.t4g.micro"
}

variable "deletion_protection" {
  description = "Protect the MLflow database from deletion (set false before `terraform destroy`)."
  type        = bool
  default     = true
}

variable "checkpoint_retention_days" {
  description = "Days after which objects under checkpoints/ expire (their versions are kept noncurrent_retention_days more)."
  type        = number
  default     = 90
}

variable "noncurrent_retention_days" {
  description = "Days a replaced or deleted object version is kept before it is removed."
  type        = number
  default     = 14
}

variable "mlflow_client_security_group_ids" {
  description = "Further security groups allowed to reach MLflow (e.g. the EKS node group's, for KubeRay)."
  type        = list(string)
  default     = []
}

variable "eks_oidc_provider_arn" {
  description = "OIDC provider of an EKS cluster running KubeRay; set it to get an IAM role for the Ray pods' service account (IRSA). null: no such role."
  type        = string
  default     = null
}

variable "eks_namespace" {
  description = "Kubernetes namespace of the RayJob (cluster/rayjob.yaml)."
  type        = string
  default     = "default"
}

variable "eks_service_account" {
  description = "Kubernetes service account of the Ray pods (cluster/rayjob.yaml)."
  type        = string
  default     = "reid3dsl-ray"
}
