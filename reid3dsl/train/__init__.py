"""Training: the per-worker loop under DeepSpeed (model and discriminator engines), the precision
policy, learning-rate schedules, checkpoints through Ray Train, and MLflow tracking from rank 0."""
