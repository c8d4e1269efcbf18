"""`FeatureExtractor`: a trained model.pt in, ReID features out — the public Python API for using a model.

    from reid3dsl import FeatureExtractor
    extract = FeatureExtractor("model.pt")                    # best device and precision here
    feats = extract(["a.jpg", "b.jpg"])                        # (2, D) float32, the model's test feature
    feats = extract(images, masks=masks, keypoints=keypoints)  # a 3D stream that reads the body proxy needs them

Images are file paths or (H, W, 3) uint8 RGB arrays of person crops; masks (H, W) uint8 (0 / 255) and keypoints
(17, 3) COCO-17 (x, y in crop pixels, confidence) as in the shards. They are transformed exactly as at test time
in training (`SampleTransform(train=False)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from reid3dsl.config import Config
from reid3dsl.data.schema import Sample, SampleMeta, decode_image, missing_keypoints
from reid3dsl.data.transforms import SampleTransform
from reid3dsl.errors import UserError
from reid3dsl.eval.extract import batch_features
from reid3dsl.models.io import load_model
from reid3dsl.models.threedsl import ThreeDSL
from reid3dsl.precision import Precision, resolve_precision

ImageInput = str | Path | np.ndarray


def best_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class FeatureExtractor:
    """A model.pt ready to extract features: `extractor(images, masks=None, keypoints=None)` → (N, D) float32.

    `feature` picks the output (default: "fused" when both streams exist, else the one stream's); `flip` averages
    with the mirrored crops; `overrides` are `section.key=value` settings applied to the saved config (e.g. a body
    model path on this machine)."""

    def __init__(self, model_path: str | Path, device: str | torch.device | None = None, precision: str = "auto",
                 feature: str | None = None, flip: bool = False, batch_size: int = 64,
                 overrides: Sequence[str] = ()) -> None:
        self.device = torch.device(device) if device is not None else best_device()
        self.cfg: Config
        self.model: ThreeDSL
        self.cfg, self.model = load_model(model_path, overrides, self.device)
        self.precision: Precision = resolve_precision(precision, self.device)
        names = [*sorted(self.model.switches.streams), *(["fused"] if len(self.model.switches.streams) == 2 else [])]
        self.feature = feature or names[-1]
        if self.feature not in names:
            raise UserError(f"feature '{self.feature}': this model gives {', '.join(names)}")
        self.flip = flip
        self.batch_size = batch_size
        self._transform = SampleTransform(self.cfg.data, train=False)

    @property
    def needs_proxy(self) -> bool:
        """Whether the features need each crop's mask and keypoints (a 3D stream that reads the body proxy)."""
        return self.feature != "rgb" and self.cfg.data.shape_input == "proxy"

    def features(self, image: torch.Tensor, shape_image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every feature of one batch of transformed inputs (as `reid3dsl.data.pipeline.eval_batches` yields)."""
        return batch_features(self.model, self.precision, image.to(self.device), shape_image.to(self.device),
                              self.flip, self.cfg.data.shape_input)

    def __call__(self, images: Sequence[ImageInput], masks: Sequence[np.ndarray] | None = None,
                 keypoints: Sequence[np.ndarray] | None = None) -> torch.Tensor:
        """Crops → features (N, D) float32 on the CPU."""
        if self.needs_proxy and (masks is None or keypoints is None):
            raise UserError("this model's 3D stream reads the body proxy (silhouette + keypoints): pass masks= and "
                            "keypoints= for the images, or use feature='rgb'")
        for name, values in (("masks", masks), ("keypoints", keypoints)):
            if values is not None and len(values) != len(images):
                raise UserError(f"{name}: {len(values)} given for {len(images)} images")
        out = []
        for start in range(0, len(images), self.batch_size):
            items = [self._transform(self._sample(i, images, masks, keypoints))
                     for i in range(start, min(start + self.batch_size, len(images)))]
            image = torch.stack([it["image"] for it in items])
            shape_image = torch.stack([it["shape_image"] for it in items])
            out.append(self.features(image, shape_image)[self.feature].cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)

    @staticmethod
    def _sample(i: int, images: Sequence[ImageInput], masks: Sequence[np.ndarray] | None,
                keypoints: Sequence[np.ndarray] | None) -> Sample:
        item = images[i]
        if isinstance(item, np.ndarray):
            image, source = item, f"images[{i}]"
        else:
            path = Path(item)
            image = decode_image(path.read_bytes()) if path.is_file() else None
            if image is None:
                raise UserError(f"image '{path}': not found or not a decodable image")
            source = str(path)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UserError(f"{source}: expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
        mask = None if masks is None else np.asarray(masks[i], np.uint8)
        if mask is not None and mask.shape != image.shape[:2]:
            raise UserError(f"masks[{i}]: expected shape {image.shape[:2]} (the image's), got {mask.shape}")
        kp = missing_keypoints() if keypoints is None else np.asarray(keypoints[i], np.float32)
        if kp.shape != missing_keypoints().shape:
            raise UserError(f"keypoints[{i}]: expected a (17, 3) array, got {kp.shape}")
        meta = SampleMeta(pid=0, camid=0, clothes=None, dataset="input", split="query", source=source)
        return Sample(key=str(i), image=image, keypoints=kp, meta=meta, mask=mask)
