"""The RGB stream E_rgb: backbone → global average pooling → F_rgb → BNNeck."""

from __future__ import annotations

import torch
from torch import nn

from reid3dsl.models.heads import BNNeck
from reid3dsl.profiling import section


class RGBStream(nn.Module):
    """forward(images (B,3,H,W)) → {"feat": F_rgb (B,C), "bn_feat": (B,C), "logits": (B,num_classes)}."""

    def __init__(self, trunk: nn.Module, channels: int, num_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.neck = BNNeck(channels, num_classes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with section("backbones"):
            fmap = self.trunk(images)
        feat = fmap.mean(dim=(2, 3))
        bn_feat, logits = self.neck(feat)
        return {"feat": feat, "bn_feat": bn_feat, "logits": logits}
