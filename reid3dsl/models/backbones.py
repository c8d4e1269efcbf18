"""torchvision ResNet trunks for both streams; pretrained weights only from a local file."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from reid3dsl.errors import UserError

_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def build_backbone(name: str, pretrained_path: str | None = None, last_stride: int = 1) -> tuple[nn.Module, int]:
    """A ResNet without pooling and classifier → (trunk, channels); trunk maps (B,3,H,W) → (B,C,H/s,W/s).

    `last_stride=1` keeps layer4 at 1/16 resolution (the common ReID trick); weights come from
    `pretrained_path` (a torchvision state dict) when given, else random initialisation — nothing is downloaded.
    """
    if name not in _CHANNELS:
        raise UserError(f"model backbone '{name}': expected one of {', '.join(_CHANNELS)}")
    net = getattr(torchvision.models, name)(weights=None)
    if pretrained_path is not None:
        path = Path(pretrained_path)
        if not path.is_file():
            raise UserError(f"pretrained weights '{path}': file not found (expected a torchvision {name} state dict)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise UserError(f"pretrained weights '{path}': not a readable torch state dict ({exc})") from None
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")] or unexpected:
            raise UserError(f"pretrained weights '{path}': keys do not match torchvision {name}")
    if last_stride == 1:
        block = net.layer4[0]
        conv = block.conv2 if name == "resnet50" else block.conv1
        conv.stride = (1, 1)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return trunk, _CHANNELS[name]
