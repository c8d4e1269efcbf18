# What the rest of the deployment needs from this infrastructure. `cluster_env` is sourced by the shell
# that renders cluster/aws.yaml and cluster/rayjob.yaml (cluster/render.sh); tests/test_deploy_static.py
# checks that it exports every ${REID3DSL_*} variable those manifests use. REID3DSL_PODS_ROLE_ARN is empty
# without eks_oidc_provider_arn, and REID3DSL_IMAGE without image_tag, so rendering then stops and names it.
# Nothing secret is exported: REID3DSL_MLFLOW_SECRET and REID3DSL_CHECKPOINT_SECRET are the ARNs of MLflow's
# password and of the checkpoint key, which the nodes read themselves.

output "bucket" {
  description = "The S3 bucket."
  value       = aws_s3_bucket.data.bucket
}

output "shards_uri" {
  description = "Where `python -m shards upload` puts data sets (one folder per data set)."
  value       = "s3://${aws_s3_bucket.data.bucket}/shards"
}

output "checkpoints_uri" {
  description = "cluster.storage_path of training runs."
  value       = "s3://${aws_s3_bucket.data.bucket}/checkpoints"
}

output "mlflow_tracking_uri" {
  description = "tracking.uri of training runs (inside the VPC)."
  value       = local.tracking_uri
}

output "node_image_repository" {
  description = "ECR repository of the Ray node image (Dockerfile, default target)."
  value       = aws_ecr_repository.image["node"].repository_url
}

output "mlflow_image_repository" {
  description = "ECR repository of the MLflow image (Dockerfile, target mlflow)."
  value       = aws_ecr_repository.image["mlflow"].repository_url
}

output "mlflow_password_secret" {
  description = "Secrets Manager ARN of the password of MLflow user mlflow_user (sign-in for people too)."
  value       = aws_secretsmanager_secret.mlflow_password.arn
}

output "checkpoint_key_secret" {
  description = "Secrets Manager ARN of the key that signs checkpoint manifests (REID3DSL_CHECKPOINT_KEY on the nodes)."
  value       = aws_secretsmanager_secret.checkpoint_key.arn
}

output "mlflow_user" {
  description = "MLflow user of the Ray nodes (the basic-auth app's admin)."
  value       = local.mlflow_user
}

output "pods_role_arn" {
  description = "IAM role of the KubeRay pods' service account (null without eks_oidc_provider_arn)."
  value       = one(aws_iam_role.pods[*].arn)
}

output "cluster_env" {
  description = "Shell exports consumed by cluster/aws.yaml and cluster/rayjob.yaml: eval \"$(terraform output -raw cluster_env)\"."
  value       = <<-EOT
    export REID3DSL_REGION=${var.region}
    export REID3DSL_REGISTRY=${local.registry}
    export REID3DSL_CLUSTER_NAME=${var.name}
    export REID3DSL_IMAGE=${local.node_image}
    export REID3DSL_BUCKET=${aws_s3_bucket.data.bucket}
    export REID3DSL_MLFLOW_URI=${local.tracking_uri}
    export REID3DSL_MLFLOW_USER=${local.mlflow_user}
    export REID3DSL_MLFLOW_SECRET=${aws_secretsmanager_secret.mlflow_password.arn}
    export REID3DSL_CHECKPOINT_SECRET=${aws_secretsmanager_secret.checkpoint_key.arn}
    export REID3DSL_AMI=${local.ami_id}
    export REID3DSL_SUBNET=${local.subnet_ids[0]}
    export REID3DSL_SECURITY_GROUP=${aws_security_group.ray.id}
    export REID3DSL_HEAD_PROFILE=${aws_iam_instance_profile.head.arn}
    export REID3DSL_WORKER_PROFILE=${aws_iam_instance_profile.worker.arn}
    export REID3DSL_HEAD_INSTANCE_TYPE=${var.head_instance_type}
    export REID3DSL_WORKER_INSTANCE_TYPE=${var.worker_instance_type}
    export REID3DSL_MAX_WORKERS=${var.worker_max_nodes}
    export REID3DSL_NAMESPACE=${var.eks_namespace}
    export REID3DSL_SERVICE_ACCOUNT=${var.eks_service_account}
    export REID3DSL_PODS_ROLE_ARN=${try(aws_iam_role.pods[0].arn, "")}
  EOT
}
