"""The BNNeck identity head shared by both streams (BoT/fast-reid style)."""

from __future__ import annotations

import torch
from torch import nn


class BNNeck(nn.Module):
    """Feature → BatchNorm (no learnt shift) → bias-free classifier.

    forward(feat (B,D)) → (bn_feat (B,D), logits (B,C)); the triplet loss uses `feat`, CE uses `logits`,
    and test features are `bn_feat`.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn_feat = self.bn(feat)
        return bn_feat, self.classifier(bn_feat)
