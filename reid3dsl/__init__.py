"""reid3dsl: texture-insensitive person re-identification by 3D shape learning (3DSL, CVPR 2021).

The library, in dependency order (each package imports only those before it): `config` (the one typed
config), `precision`, `profiling`; `body` (SMPL+D, stand-in body, projection, renderer, pose prior) and
`models` (backbones, the two streams, the discriminator, the `ThreeDSL` meta-architecture, model.pt);
`data` (shard schema, streaming pipeline, the embedded data set); `losses`; `eval` (metrics, feature
extraction, `FeatureExtractor`, pictures); `train` (the per-worker loop under DeepSpeed, checkpoints,
MLflow, the driver). Heavy dependencies are imported by the modules that use them, not here.

    from reid3dsl import FeatureExtractor
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["FeatureExtractor"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import reid3dsl` stays cheap for the CLIs that never extract features.
    if name == "FeatureExtractor":
        from reid3dsl.eval.extractor import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module 'reid3dsl' has no attribute {name!r}")
