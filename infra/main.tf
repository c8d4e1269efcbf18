# reid3dsl's AWS infrastructure: one S3 bucket (shards/, checkpoints/, mlflow/), least-privilege IAM for the
# Ray nodes (head, GPU workers, optionally KubeRay pods through IRSA), ECR repositories for the two images of
# the Dockerfile, and an MLflow tracking server (Fargate container, PostgreSQL on RDS, artifacts in S3) behind
# MLflow's basic-auth app, reachable only inside the VPC at http://mlflow.<name>.internal:5000. Secrets (the
# database password, MLflow's password) are generated write-only into Secrets Manager: they are in no state
# file, image, file in the repository or command line. README.md beside this file walks through it.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_vpc" "selected" {
  id      = var.vpc_id
  default = var.vpc_id == null
}

data "aws_subnets" "selected" {
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.selected.id]
  }
}

data "aws_ami" "dlami" {
  count       = var.ami_id == null ? 1 : 0
  most_recent = true
  owners      = ["amazon"]

  filter {
    name   = "name"
    values = ["Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) *"]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

locals {
  subnet_ids   = length(var.subnet_ids) > 0 ? var.subnet_ids : sort(data.aws_subnets.selected.ids)
  ami_id       = var.ami_id != null ? var.ami_id : data.aws_ami.dlami[0].id
  bucket_arn   = aws_s3_bucket.data.arn
  mlflow_host  = "mlflow.${var.name}.internal"
  tracking_uri = "http://${local.mlflow_host}:5000"
  registry     = "${data.aws_caller_identity.current.account_id}.dkr.ecr.${var.region}.amazonaws.com"
  # ARN prefix of this account's EC2 resources in the region.
  ec2_arn = "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}"
  # Ray's cluster launcher tags every instance it starts with ray-cluster-name = cluster_name (cluster/aws.yaml
  # takes it from cluster_env); the head's EC2 rights hold only for instances carrying this tag.
  ray_cluster_tag = "ray-cluster-name"
  # MLflow's user for the Ray nodes (the basic-auth app's admin; its password is a secret below).
  mlflow_user = "reid3dsl"
  # Images by digest, resolved from var.image_tag when set (an immutable tag: the digest cannot change under it).
  node_image   = var.image_tag == null ? "" : "${aws_ecr_repository.image["node"].repository_url}@${data.aws_ecr_image.image["node"].image_digest}"
  mlflow_image = var.image_tag == null ? "" : "${aws_ecr_repository.image["mlflow"].repository_url}@${data.aws_ecr_image.image["mlflow"].image_digest}"
}

# ---------------------------------------------------------------------------------------------------------
# S3: shards/ (read by the nodes), checkpoints/ (written by the nodes, expire), mlflow/ (MLflow's artifacts)

resource "aws_s3_bucket" "data" {
  bucket = var.bucket_name
}

resource "aws_s3_bucket_ownership_controls" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "data" {
  bucket = aws_s3_bucket.data.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket = aws_s3_bucket.data.id

  rule {
    id     = "old-checkpoints"
    status = "Enabled"
    filter {
      prefix = "checkpoints/"
    }
    expiration {
      days = var.checkpoint_retention_days
    }
  }

  rule {
    id     = "noncurrent-versions-and-stale-uploads"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_retention_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  # Lifecycle rules need versioning settled first.
  depends_on = [aws_s3_bucket_versioning.data]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]
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

resource "aws_s3_bucket_policy" "data" {
  bucket     = aws_s3_bucket.data.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.data]
}

# ---------------------------------------------------------------------------------------------------------
# IAM: what a Ray node may do in S3 (read shards, read/write/delete checkpoints), plus what the head needs to
# start and stop GPU workers. No keys anywhere: instance profiles (cluster launcher) or IRSA (KubeRay).
#
# Checkpoints: IAM sees the node, not the job. Every job on a Ray cluster runs its workers on the same nodes
# under the same role, so IAM cannot keep one job out of another's checkpoints/<cluster.name>/ folder; what it
# does keep them from is writing anywhere else (shards/, mlflow/) and erasing history: nodes have no
# s3:DeleteObjectVersion, so with versioning on, an overwritten or deleted checkpoint stays recoverable for
# noncurrent_retention_days. A job tells its own checkpoints from planted ones by their signed manifests (the
# key comes from the environment or a secret store, never from the bucket).

data "aws_iam_policy_document" "node_s3" {
  statement {
    sid       = "LocateTheBucket"
    actions   = ["s3:GetBucketLocation"]
    resources = [local.bucket_arn]
  }
  statement {
    sid       = "ListShardsAndCheckpoints"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["shards", "shards/*", "checkpoints", "checkpoints/*"]
    }
  }
  statement {
    sid       = "ReadShards"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/shards/*"]
  }
  statement {
    sid = "ReadWriteCheckpoints"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${local.bucket_arn}/checkpoints/*"]
  }
}

resource "aws_iam_policy" "node_s3" {
  name        = "${var.name}-node-s3"
  description = "Ray nodes of ${var.name}: read shards/, read and write checkpoints/ in ${var.bucket_name}"
  policy      = data.aws_iam_policy_document.node_s3.json
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "worker" {
  name               = "${var.name}-ray-worker"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role" "head" {
  name               = "${var.name}-ray-head"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "node_s3" {
  for_each   = { head = aws_iam_role.head.name, worker = aws_iam_role.worker.name }
  role       = each.value
  policy_arn = aws_iam_policy.node_s3.arn
}

# The secrets the nodes read at boot through the instance role (cluster/aws.yaml, initialization_commands), never
# from a file in the repository or a command line: MLflow's password, and the key that signs checkpoint manifests
# (REID3DSL_CHECKPOINT_KEY) — in no file in the bucket, so write access to checkpoints/ alone cannot forge a
# checkpoint a job will load. Not the database's password (only MLflow's task reads that).
data "aws_iam_policy_document" "node_secrets" {
  statement {
    sid       = "ReadNodeSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.mlflow_password.arn, aws_secretsmanager_secret.checkpoint_key.arn]
  }
}

resource "aws_iam_policy" "node_secrets" {
  name        = "${var.name}-node-secrets"
  description = "Ray nodes of ${var.name}: read MLflow's password and the checkpoint-signing key"
  policy      = data.aws_iam_policy_document.node_secrets.json
}

resource "aws_iam_role_policy_attachment" "node_secrets" {
  for_each   = { head = aws_iam_role.head.name, worker = aws_iam_role.worker.name }
  role       = each.value
  policy_arn = aws_iam_policy.node_secrets.arn
}

resource "aws_iam_role_policy_attachment" "node_ecr" {
  for_each   = { head = aws_iam_role.head.name, worker = aws_iam_role.worker.name }
  role       = each.value
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly"
}

# The EC2 calls of Ray's AWS node provider (ray/autoscaler/_private/aws/node_provider.py), run by the head.
# Describe calls cannot be limited to resources (EC2 has no resource-level permissions for them); everything
# that starts, tags, stops or ends an instance holds only for instances tagged ray-cluster-name = var.name:
# RunInstances must carry that tag (Ray sets it on every instance it starts), the others need it already set.
data "aws_iam_policy_document" "autoscaler" {
  statement {
    sid = "DescribeIsAccountWide"
    actions = [
      "ec2:DescribeInstances",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeImages",
      "ec2:DescribeSubnets",
      "ec2:DescribeSecurityGroups",
      "ec2:DescribeKeyPairs",
      "ec2:DescribeLaunchTemplateVersions",
    ]
    resources = ["*"]
  }
  statement {
    sid       = "LaunchOnlyInstancesTaggedWithTheCluster"
    actions   = ["ec2:RunInstances"]
    resources = ["${local.ec2_arn}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/${local.ray_cluster_tag}"
      values   = [var.name]
    }
  }
  statement {
    sid     = "LaunchIntoTheClustersSubnetsAndGroup"
    actions = ["ec2:RunInstances"]
    resources = concat(
      [for id in local.subnet_ids : "${local.ec2_arn}:subnet/${id}"],
      [
        "${local.ec2_arn}:security-group/${aws_security_group.ray.id}",
        "${local.ec2_arn}:network-interface/*",
        "${local.ec2_arn}:volume/*",
        "${local.ec2_arn}:key-pair/*",
        "arn:${data.aws_partition.current.partition}:ec2:${var.region}::image/*",
      ],
    )
  }
  statement {
    sid       = "TagAtLaunch"
    actions   = ["ec2:CreateTags"]
    resources = ["${local.ec2_arn}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances"]
    }
  }
  statement {
    sid       = "ManageOnlyTheClustersInstances"
    actions   = ["ec2:CreateTags", "ec2:TerminateInstances", "ec2:StartInstances", "ec2:StopInstances"]
    resources = ["${local.ec2_arn}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/${local.ray_cluster_tag}"
      values   = [var.name]
    }
  }
  statement {
    sid       = "HandWorkersTheirRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.worker.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com"]
    }
  }
  statement {
    sid       = "ReadWorkersProfile"
    actions   = ["iam:GetInstanceProfile"]
    resources = [aws_iam_instance_profile.worker.arn]
  }
}

resource "aws_iam_role_policy" "autoscaler" {
  name   = "ray-autoscaler"
  role   = aws_iam_role.head.id
  policy = data.aws_iam_policy_document.autoscaler.json
}

resource "aws_iam_instance_profile" "head" {
  name = "${var.name}-ray-head"
  role = aws_iam_role.head.name
}

resource "aws_iam_instance_profile" "worker" {
  name = "${var.name}-ray-worker"
  role = aws_iam_role.worker.name
}

# KubeRay on EKS: the Ray pods' service account assumes this role (IRSA), with the same S3 rights.
data "aws_iam_policy_document" "irsa_assume" {
  count = var.eks_oidc_provider_arn == null ? 0 : 1
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${replace(var.eks_oidc_provider_arn, "/^arn:[^:]+:iam::[0-9]+:oidc-provider\\//", "")}:sub"
      values   = ["system:serviceaccount:${var.eks_namespace}:${var.eks_service_account}"]
    }
  }
}

resource "aws_iam_role" "pods" {
  count              = var.eks_oidc_provider_arn == null ? 0 : 1
  name               = "${var.name}-ray-pods"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume[0].json
}

resource "aws_iam_role_policy_attachment" "pods_s3" {
  count      = var.eks_oidc_provider_arn == null ? 0 : 1
  role       = aws_iam_role.pods[0].name
  policy_arn = aws_iam_policy.node_s3.arn
}

# ---------------------------------------------------------------------------------------------------------
# Images: the Dockerfile's two targets are pushed here (README.md, step 3).

# A pushed tag can never be moved to other content; the manifests and the MLflow task use digests anyway.
resource "aws_ecr_repository" "image" {
  for_each             = toset(["node", "mlflow"])
  name                 = each.key == "node" ? var.name : "${var.name}-mlflow"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "AES256"
  }
}

# The digests behind var.image_tag (push both images with that tag first: README.md, step 2).
data "aws_ecr_image" "image" {
  for_each        = var.image_tag == null ? toset([]) : toset(["node", "mlflow"])
  repository_name = aws_ecr_repository.image[each.key].name
  image_tag       = var.image_tag
}

# ---------------------------------------------------------------------------------------------------------
# Network: the Ray nodes talk freely among themselves and take SSH only from ssh_cidrs; MLflow takes 5000
# only from the nodes (and the extra client groups); the database takes 5432 only from MLflow.

resource "aws_security_group" "ray" {
  name        = "${var.name}-ray-nodes"
  description = "Ray nodes of ${var.name}"
  vpc_id      = data.aws_vpc.selected.id
}

resource "aws_vpc_security_group_ingress_rule" "ray_internal" {
  security_group_id            = aws_security_group.ray.id
  referenced_security_group_id = aws_security_group.ray.id
  ip_protocol                  = "-1"
  description                  = "Ray, NCCL and object transfer between the nodes"
}

resource "aws_vpc_security_group_ingress_rule" "ray_ssh" {
  for_each          = toset(var.ssh_cidrs)
  security_group_id = aws_security_group.ray.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  description       = "SSH for ray up / ray dashboard / ray attach"
}

resource "aws_security_group" "mlflow" {
  name        = "${var.name}-mlflow"
  description = "MLflow tracking server of ${var.name}"
  vpc_id      = data.aws_vpc.selected.id
}

resource "aws_vpc_security_group_ingress_rule" "mlflow_clients" {
  for_each                     = toset(concat([aws_security_group.ray.id], var.mlflow_client_security_group_ids))
  security_group_id            = aws_security_group.mlflow.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 5000
  to_port                      = 5000
  description                  = "MLflow clients"
}

resource "aws_security_group" "db" {
  name        = "${var.name}-mlflow-db"
  description = "MLflow's PostgreSQL of ${var.name}"
  vpc_id      = data.aws_vpc.selected.id
}

resource "aws_vpc_security_group_ingress_rule" "db_from_mlflow" {
  security_group_id            = aws_security_group.db.id
  referenced_security_group_id = aws_security_group.mlflow.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  description                  = "PostgreSQL from MLflow"
}

resource "aws_vpc_security_group_egress_rule" "all" {
  for_each          = { ray = aws_security_group.ray.id, mlflow = aws_security_group.mlflow.id }
  security_group_id = each.value
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
  description       = "Images, packages, S3, AWS APIs"
}

# ---------------------------------------------------------------------------------------------------------
# Secrets: MLflow's database password, the password of MLflow's user for the nodes and the key that signs
# checkpoint manifests. Each is generated by an ephemeral resource and written through write-only arguments
# (Terraform >= 1.11), so none is in the state or the plan; the only copy is in Secrets Manager, read by the
# MLflow task (as container secrets) and by the Ray nodes (MLflow's password and the checkpoint key, through their
# instance role). Alphanumeric: they sit in URIs, basic-auth headers and env files unescaped. Rotating: bump the
# *_wo_version below (the database follows the secret on the next apply; MLflow's stored password must then be
# changed through its update-password API; a new checkpoint key makes the checkpoints signed with the old one
# unusable, so rotate it between jobs).

resource "aws_secretsmanager_secret" "db_password" {
  name                    = "${var.name}/mlflow/db-password"
  description             = "Password of the mlflow user of ${var.name}'s MLflow database"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret" "mlflow_password" {
  name                    = "${var.name}/mlflow/password"
  description             = "Password of MLflow user ${local.mlflow_user} (the Ray nodes' and the admin's) of ${var.name}"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret" "checkpoint_key" {
  name                    = "${var.name}/checkpoint-key"
  description             = "Key that signs the checkpoint manifests of ${var.name}'s jobs (REID3DSL_CHECKPOINT_KEY on the nodes)"
  recovery_window_in_days = 7
}

ephemeral "random_password" "db" {
  length  = 40
  special = false
}

ephemeral "random_password" "mlflow" {
  length  = 40
  special = false
}

ephemeral "random_password" "checkpoint_key" {
  length  = 64
  special = false
}

resource "aws_secretsmanager_secret_version" "db_password" {
  secret_id                = aws_secretsmanager_secret.db_password.id
  secret_string_wo         = ephemeral.random_password.db.result
  secret_string_wo_version = 1
}

resource "aws_secretsmanager_secret_version" "mlflow_password" {
  secret_id                = aws_secretsmanager_secret.mlflow_password.id
  secret_string_wo         = ephemeral.random_password.mlflow.result
  secret_string_wo_version = 1
}

resource "aws_secretsmanager_secret_version" "checkpoint_key" {
  secret_id                = aws_secretsmanager_secret.checkpoint_key.id
  secret_string_wo         = ephemeral.random_password.checkpoint_key.result
  secret_string_wo_version = 1
}

# The database takes its password from the secret (read back, so the two cannot differ).
ephemeral "aws_secretsmanager_secret_version" "db_password" {
  secret_id  = aws_secretsmanager_secret.db_password.id
  depends_on = [aws_secretsmanager_secret_version.db_password]
}

# ---------------------------------------------------------------------------------------------------------
# MLflow's database: PostgreSQL on RDS, encrypted, private, TLS required by the client (PGSSLMODE below).

resource "aws_db_subnet_group" "mlflow" {
  name       = "${var.name}-mlflow"
  subnet_ids = local.subnet_ids
}

resource "aws_db_instance" "mlflow" {
  identifier                = "${var.name}-mlflow"
  engine                    = "postgres"
  engine_version            = "17"
  instance_class            = var.db_instance_class
  allocated_storage         = 20
  max_allocated_storage     = 100
  storage_encrypted         = true
  db_name                   = "mlflow"
  username                  = "mlflow"
  password_wo               = ephemeral.aws_secretsmanager_secret_version.db_password.secret_string
  password_wo_version       = aws_secretsmanager_secret_version.db_password.secret_string_wo_version
  db_subnet_group_name      = aws_db_subnet_group.mlflow.name
  vpc_security_group_ids    = [aws_security_group.db.id]
  publicly_accessible       = false
  backup_retention_period   = 7
  deletion_protection       = var.deletion_protection
  final_snapshot_identifier = "${var.name}-mlflow-final"
}

# ---------------------------------------------------------------------------------------------------------
# MLflow server: one Fargate task of the Dockerfile's `mlflow` target, registered in a private DNS zone.

resource "aws_ecs_cluster" "mlflow" {
  name = "${var.name}-mlflow"
}

resource "aws_cloudwatch_log_group" "mlflow" {
  name              = "/ecs/${var.name}-mlflow"
  retention_in_days = 30
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "mlflow_execution" {
  name               = "${var.name}-mlflow-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "mlflow_execution" {
  role       = aws_iam_role.mlflow_execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "mlflow_secret" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.db_password.arn, aws_secretsmanager_secret.mlflow_password.arn]
  }
}

resource "aws_iam_role_policy" "mlflow_secret" {
  name   = "read-mlflow-secrets"
  role   = aws_iam_role.mlflow_execution.id
  policy = data.aws_iam_policy_document.mlflow_secret.json
}

resource "aws_iam_role" "mlflow_task" {
  name               = "${var.name}-mlflow-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "mlflow_artifacts" {
  statement {
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["mlflow", "mlflow/*"]
    }
  }
  statement {
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${local.bucket_arn}/mlflow/*"]
  }
}

resource "aws_iam_role_policy" "mlflow_artifacts" {
  name   = "mlflow-artifacts"
  role   = aws_iam_role.mlflow_task.id
  policy = data.aws_iam_policy_document.mlflow_artifacts.json
}

# Without var.image_tag there is no image to run yet: no task definition, and the service is not created.
resource "aws_ecs_task_definition" "mlflow" {
  count                    = var.image_tag == null ? 0 : 1
  family                   = "${var.name}-mlflow"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.mlflow_cpu
  memory                   = var.mlflow_memory
  execution_role_arn       = aws_iam_role.mlflow_execution.arn
  task_role_arn            = aws_iam_role.mlflow_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([{
    name      = "mlflow"
    image     = local.mlflow_image
    essential = true
    portMappings = [{
      containerPort = 5000
      protocol      = "tcp"
    }]
    # The database connection comes from libpq's environment, the password from a secret: the backend URI
    # below (and the auth app's, in the image) is a bare postgresql://, so no password is on any command line.
    environment = [
      { name = "PGHOST", value = aws_db_instance.mlflow.address },
      { name = "PGPORT", value = "5432" },
      { name = "PGUSER", value = aws_db_instance.mlflow.username },
      { name = "PGDATABASE", value = aws_db_instance.mlflow.db_name },
      { name = "PGSSLMODE", value = "require" },
      { name = "MLFLOW_AUTH_ADMIN_USERNAME", value = local.mlflow_user },
      { name = "AWS_DEFAULT_REGION", value = var.region },
    ]
    secrets = [
      { name = "PGPASSWORD", valueFrom = aws_secretsmanager_secret.db_password.arn },
      { name = "MLFLOW_AUTH_ADMIN_PASSWORD", valueFrom = aws_secretsmanager_secret.mlflow_password.arn },
    ]
    # The image's entry point is `mlflow server --app-name basic-auth`: every request needs a user and password.
    # Artifacts are proxied to S3 by the server, so clients need no S3 rights for them. Host headers: the
    # private DNS name and SSH tunnels to localhost.
    command = [
      "--host", "0.0.0.0",
      "--port", "5000",
      "--backend-store-uri", "postgresql://",
      "--artifacts-destination", "s3://${var.bucket_name}/mlflow",
      "--allowed-hosts", "${local.mlflow_host}:5000,localhost:*,127.0.0.1:*",
    ]
    healthCheck = {
      command     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health')"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.mlflow.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "mlflow"
      }
    }
  }])
}

resource "aws_service_discovery_private_dns_namespace" "internal" {
  name        = "${var.name}.internal"
  description = "Private names of ${var.name}'s services"
  vpc         = data.aws_vpc.selected.id
}

resource "aws_service_discovery_service" "mlflow" {
  name = "mlflow"
  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.internal.id
    routing_policy = "MULTIVALUE"
    dns_records {
      type = "A"
      ttl  = 10
    }
  }
}

resource "aws_ecs_service" "mlflow" {
  count           = var.image_tag == null ? 0 : 1
  name            = "mlflow"
  cluster         = aws_ecs_cluster.mlflow.id
  task_definition = aws_ecs_task_definition.mlflow[0].arn
  desired_count   = 1
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = local.subnet_ids
    security_groups  = [aws_security_group.mlflow.id]
    assign_public_ip = var.assign_public_ip
  }

  service_registries {
    registry_arn = aws_service_discovery_service.mlflow.arn
  }
}
