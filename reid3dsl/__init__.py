"""reid3dsl: texture-insensitive person re-identification by 3D shape learning (3DSL, CVPR 2021).

The library: `config` (the one typed config), `body` (SMPL+D, stand-in body, projection, renderer,
pose prior), `data` (shard schema and streaming pipeline), `models` (backbones, the two streams, the
discriminator), `losses`, `eval` (metrics, feature extraction, pictures) and `train` (the per-worker
loop under DeepSpeed, precision, checkpoints, MLflow). Heavy dependencies are imported by the modules
that use them, not here.
"""

__version__ = "0.1.0"
