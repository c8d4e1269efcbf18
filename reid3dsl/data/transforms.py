"""Per-sample transforms, applied consistently to the crop, its silhouette mask and its keypoints.

One geometric draw per sample (a shift that equals random cropping after `data.pad` pixels of padding, and
a horizontal flip) is applied to every output: the RGB stream's image (data.height × data.width), the 3D
stream's image (data.shape_height × data.shape_width), the mask (data.sil_height × data.sil_width) and the
keypoints (pixels of the 3D stream's image). A flip mirrors the keypoints AND swaps left and right with
`COCO17_FLIP_PERM`. Random erasing touches the RGB stream's image only; then ImageNet normalisation.
With `data.shape_input=proxy` the 3D stream's input is the body proxy instead (`body_proxy`): silhouette and
keypoint heatmaps at its size, after the same geometric draw, so it holds no clothing texture.
The torchvision v2 kernels do the resampling (images, mask) and the coordinate maths (`KeyPoints`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from reid3dsl.body.constants import COCO17_FLIP_PERM, COCO17_NAMES
from reid3dsl.config import DataConfig
from reid3dsl.data.schema import Sample

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Proxy channels 1 and 2: keypoints of the person's left side and of the right side (the nose in both), so
# the proxy keeps which side faces the camera.
_PROXY_SIDES = (
    [i for i, n in enumerate(COCO17_NAMES) if not n.startswith("right")],
    [i for i, n in enumerate(COCO17_NAMES) if not n.startswith("left")],
)
PROXY_SIGMA = 1 / 32  # heatmap std as a fraction of the proxy's height


def normalize(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float in [0, 1] → ImageNet-normalised."""
    return F.normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD))


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) ImageNet-normalised → float in [0, 1] (for pictures)."""
    mean = image.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1)


def body_proxy(mask: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """The texture-free input of the 3D stream: mask (H, W) in [0, 1] and keypoints (17, 3) (x, y in pixels of
    that size; confidence 0 = missing) → (3, H, W): the silhouette, then Gaussian heatmaps (max over joints)
    of the left-side and of the right-side keypoints."""
    height, width = mask.shape
    sigma = PROXY_SIGMA * height
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    channels = [mask.to(torch.float32)]
    for side in _PROXY_SIDES:
        kp = keypoints[side]
        kp = kp[kp[:, 2] > 0]
        if not len(kp):
            channels.append(torch.zeros(height, width))
            continue
        d2 = (xs[None] - kp[:, 0, None, None]) ** 2 + (ys[None] - kp[:, 1, None, None]) ** 2
        channels.append(torch.exp(-d2 / (2 * sigma**2)).amax(dim=0))
    return torch.stack(channels)


def flip_inputs(image: torch.Tensor, shape_image: torch.Tensor, shape_input: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The network inputs of the horizontally mirrored crops: image (B, 3, H, W) and shape_image (B, 3, h, w) →
    both mirrored; a body proxy (`shape_input` "proxy") also swaps its left-side and right-side heatmaps, so it
    equals the proxy of the mirrored sample, as the training flip makes it."""
    mirrored = shape_image.flip(-1)
    if shape_input == "proxy":
        mirrored = mirrored[:, [0, 2, 1]]
    return image.flip(-1), mirrored


class SampleTransform:
    """`Sample` → dict of tensors for one crop (see `__call__`); `train=False` is the deterministic eval path."""

    def __init__(self, cfg: DataConfig, train: bool) -> None:
        self.cfg = cfg
        self.train = train
        self._erase = v2.RandomErasing(p=cfg.erase_prob, value=0.0)
        self._flip_perm = torch.as_tensor(COCO17_FLIP_PERM, dtype=torch.long)
        self._erasing = train and cfg.erase_prob > 0
        # The 3D stream gets the RGB stream's tensor when it sees the image, sizes match and nothing is erased.
        self.shares_shape_image = (
            cfg.shape_input == "image" and (cfg.shape_height, cfg.shape_width) == (cfg.height, cfg.width)
            and not self._erasing
        )

    def _draw(self, rng: np.random.Generator | None) -> tuple[int, int, bool]:
        if not self.train or rng is None:
            return 0, 0, False
        pad = self.cfg.pad
        dy, dx = (int(v) for v in rng.integers(-pad, pad + 1, size=2))
        return dy, dx, bool(rng.random() < self.cfg.flip_prob)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """One crop → `image` (3, height, width) normalised; `shape_image` (3, shape_height, shape_width),
        normalised or the body proxy (`body_proxy`); `mask` (sil_height, sil_width) float in [0, 1]; `has_mask`
        bool; `keypoints` (17, 3) float32 (x, y in pixels of shape_image; confidence, 0 = missing). `rng` drives
        the augmentation (train only)."""
        cfg = self.cfg
        img = torch.from_numpy(sample.image).permute(2, 0, 1)  # (3, H, W) uint8
        height, width = img.shape[1:]
        dy, dx, flip = self._draw(rng)
        # The shift is drawn in pixels of the RGB stream's input and mapped to the source crop, so every
        # output sees the same window of the person.
        top = round(dy * height / cfg.height)
        left = round(dx * width / cfg.width)

        def geometric(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
            out = F.resized_crop(x, top, left, height, width, list(size), InterpolationMode.BILINEAR, antialias=True)
            return F.horizontal_flip(out) if flip else out

        def as_input(size: tuple[int, int]) -> torch.Tensor:
            return normalize(F.to_dtype(geometric(img, size), torch.float32, scale=True))

        image = as_input((cfg.height, cfg.width))
        if self._erasing and rng is not None:
            # RandomErasing draws from torch's global generator: seed a forked one from our rng so the
            # stream stays reproducible and the trainer's own random state is left alone.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**62)))
                image = self._erase(image)
        shape_size = (cfg.shape_height, cfg.shape_width)
        mask_in = None if sample.mask is None else torch.from_numpy(sample.mask).to(torch.float32).div_(255.0)[None]

        def mask_at(size: tuple[int, int]) -> torch.Tensor:
            return torch.zeros(size) if mask_in is None else geometric(mask_in, size)[0].clamp_(0, 1)

        mask = mask_at((cfg.sil_height, cfg.sil_width))

        kp = torch.from_numpy(sample.keypoints)
        points = tv_tensors.KeyPoints(kp[:, :2], canvas_size=(height, width))
        points = F.resized_crop(points, top, left, height, width, list(shape_size))
        conf = kp[:, 2].clone()
        if flip:
            points = F.horizontal_flip(points)[self._flip_perm]
            conf = conf[self._flip_perm]
        xy = points.as_subclass(torch.Tensor) * (conf > 0)[:, None]
        keypoints = torch.cat([xy, conf[:, None]], dim=1).to(torch.float32)
        if cfg.shape_input == "proxy":
            shape_image = body_proxy(mask_at(shape_size), keypoints)
        else:
            shape_image = image if self.shares_shape_image else as_input(shape_size)
        return {
            "image": image,
            "shape_image": shape_image,
            "mask": mask,
            "has_mask": sample.mask is not None,
            "keypoints": keypoints,
        }
