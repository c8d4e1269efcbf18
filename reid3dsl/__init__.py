"""reid3dsl: texture-insensitive person re-identification by 3D shape learning (3DSL, CVPR 2021).

The library, in dependency order (each package imports only those before it): `config` (the one typed
config), `precision`, `profiling`; `body` (SMPL+D, stand-in body, projection, renderer, pose prior) and
`models` (backbones, the two streams, the discriminator, the `ThreeDSL` meta-architecture, model.pt);
`data` (shard schema, streaming pipeline, the embedded data set); `losses`; `eval` (metrics, feature
extraction, `FeatureExtractor`, pictures); `train` (the per-worker loop under DeepSpeed, checkpoints,
MLflow, the driver). Heavy dependencies are imported by the modules that use them, not here.

    from reid3dsl import FeatureExtractor
"""

import os
from typing import Any

__version__ = "0.1.0"
__all__ = ["FeatureExtractor"]

# The largest crop side any image read from shards may have (`data.max_image_side` can only lower it).
MAX_IMAGE_SIDE = 4096
# OpenCV reads its decoder pixel cap once, when it is loaded, and no call changes it later: set here, before any
# reid3dsl module imports cv2, it stops an image no header check saw (a source image in `shards build`, a file
# given to `FeatureExtractor`) from decoding into gigabytes.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_SIDE**2))


def __getattr__(name: str) -> Any:
    # Lazy, so `import reid3dsl` stays cheap for the CLIs that never extract features.
    if name == "FeatureExtractor":
        from reid3dsl.eval.extractor import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module 'reid3dsl' has no attribute {name!r}")
