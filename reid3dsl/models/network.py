"""The two-stream network: an RGB stream and a 3D shape stream side by side.

A `TwoStreamNet` consists of (1) the RGB stream E_rgb → F_rgb with a BNNeck identity head and (2) the 3D
stream E_3D → E_pose (θ, ψ) and E_shape (F_shape, β, δ) with its own identity head; `model.streams` builds
either or both. `build_network` assembles it from the config; the class itself takes plain modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid3dsl.config import Config
from reid3dsl.models.backbones import build_backbone
from reid3dsl.models.rgb import RGBStream
from reid3dsl.models.shape import PoseRegressor, ShapeEncoder, ShapeStream

FEATURES = ("rgb", "shape", "fused")


class TwoStreamNet(nn.Module):
    """forward(image (B,3,H,W), shape_image (B,3,h,w) | None) → {"rgb": {...}, "shape": {...}} for the streams built."""

    def __init__(self, rgb: RGBStream | None, shape: ShapeStream | None) -> None:
        super().__init__()
        if rgb is None and shape is None:
            raise ValueError("a TwoStreamNet needs at least one stream")
        self.rgb = rgb
        self.shape = shape

    def forward(self, image: torch.Tensor, shape_image: torch.Tensor | None = None) -> dict[str, dict]:
        out: dict[str, dict] = {}
        if self.rgb is not None:
            out["rgb"] = self.rgb(image)
        if self.shape is not None:
            out["shape"] = self.shape(image if shape_image is None else shape_image)
        return out

    @torch.no_grad()
    def extract(self, image: torch.Tensor, shape_image: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Test-time features: "rgb" F_rgb, "shape" F_shape (both after BNNeck) and "fused", the concatenation of
        the L2-normalised two — for the streams built. Each (B, D), float32."""
        out = self.forward(image, shape_image)
        feats = {name: out[name]["bn_feat"].float() for name in ("rgb", "shape") if name in out}
        if len(feats) == 2:
            feats["fused"] = torch.cat([F.normalize(feats["rgb"], dim=1), F.normalize(feats["shape"], dim=1)], dim=1)
        return feats


def build_network(
    cfg: Config,
    num_classes: int,
    *,
    mean_pose: torch.Tensor | None = None,
    num_vertices: int = 0,
    part_groups: list[torch.Tensor] | None = None,
) -> TwoStreamNet:
    """The network of `cfg.model`; the 3D stream needs the body's `mean_pose` (24,3,3), `num_vertices` and, with
    MGS, the vertex groups of its body parts (ordered head to feet)."""
    m = cfg.model
    rgb = None
    if m.streams in ("rgb", "both"):
        trunk, channels = build_backbone(m.backbone, m.pretrained_path, m.last_stride)
        rgb = RGBStream(trunk, channels, num_classes)
    shape = None
    if m.streams in ("3d", "both"):
        if mean_pose is None or num_vertices <= 0:
            raise ValueError("the 3D stream needs mean_pose and num_vertices of the body model")
        trunk, channels = build_backbone(m.shape_backbone, m.shape_pretrained_path, m.last_stride)
        pose = PoseRegressor(channels, mean_pose, torch.tensor([0.9, 0.0, 0.0]), m.regressor_iterations)
        encoder = ShapeEncoder(channels, m.shape_feat_dim, cfg.body.num_betas, num_vertices,
                               part_groups if m.mgs else None, m.max_displacement)
        shape = ShapeStream(trunk, channels, pose, encoder, num_classes)
    return TwoStreamNet(rgb, shape)
