"""The 3DSL objective: identity losses of both streams, the self-supervised projection losses (keypoints,
silhouette, displacement) through the model's body and renderer, and the adversarial prior (LSGAN).

`Objective.generator_terms` returns the unweighted terms of the encoders' loss and `total` weights them from
`cfg.loss`; `Objective.discriminator_loss` is the discriminator's LSGAN loss. Which terms exist is the model's
`Switches`, read here once. Projection runs in fp32 outside autocast whatever the precision policy chose for
the networks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from reid3dsl import losses
from reid3dsl.config import Config
from reid3dsl.models.threedsl import Switches, ThreeDSL
from reid3dsl.profiling import section


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Gradients flow through `module` to its inputs but not into its parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class Objective:
    """Loss terms of the encoders (generator) and of the discriminator, weighted by `cfg.loss`."""

    def __init__(self, cfg: Config, switches: Switches, clothes_aware: bool) -> None:
        self.loss = cfg.loss
        self.sil_size = (cfg.data.sil_height, cfg.data.sil_width)
        self.switches = switches
        self.clothes_aware = clothes_aware
        w = cfg.loss
        self.weights = {
            "ce_rgb": w.ce_weight, "triplet_rgb": w.triplet_weight,
            "ce_shape": w.shape_ce_weight, "triplet_shape": w.shape_triplet_weight,
            "keypoint": w.keypoint_weight, "silhouette": w.silhouette_weight,
            "displacement": w.displacement_weight, "adversarial": w.adversarial_weight,
        }

    def _identity_terms(self, out: dict, batch: dict, stream: str) -> dict[str, torch.Tensor]:
        pids = batch["pid"]
        clothes = batch["clothes"] if self.clothes_aware else None
        return {
            f"ce_{stream}": F.cross_entropy(out["logits"].float(), pids, label_smoothing=self.loss.label_smoothing),
            f"triplet_{stream}": losses.triplet_loss(out["feat"].float(), pids, self.loss.triplet_margin, clothes),
        }

    def generator_terms(self, out: dict, batch: dict, model: ThreeDSL, disc: nn.Module | None,
                        assp_warmup: bool = False) -> dict[str, torch.Tensor]:
        """Unweighted loss terms for the streams in `out` (`model` projects the 3D stream's output); `disc` is the
        discriminator module (frozen here). In the ASSP warm-up the 3D stream has no identity terms: it learns from
        the projection and the prior alone."""
        with section("losses"):
            terms: dict[str, torch.Tensor] = {}
            for stream in sorted(self.switches.streams - ({"shape"} if assp_warmup else set())):
                terms.update(self._identity_terms(out[stream], batch, stream))
            if not self.switches.has_3d:
                return terms
            shape_out = out["shape"]
            with section("smpl"):
                projected = model.project(shape_out)
            with torch.autocast(shape_out["cam"].device.type, enabled=False):
                terms["keypoint"] = losses.keypoint_loss(projected["keypoints_2d"], batch["keypoints"],
                                                         model.shape_size)
                terms["displacement"] = losses.displacement_loss(shape_out["delta"].float())
                if self.switches.silhouette:
                    idx = self._silhouette_rows(batch)
                    if idx.numel():
                        with section("renderer"):
                            sil = model.silhouettes({k: v[idx] for k, v in projected.items()}, self.sil_size)
                        terms["silhouette"] = losses.silhouette_loss(sil, batch["mask"][idx].float())
            if self.switches.adversarial:
                assert disc is not None, "the adversarial term needs the discriminator"
                with frozen(disc), section("discriminator"):
                    scores = disc(shape_out["rotmats"], shape_out["betas"])
                terms["adversarial"] = losses.lsgan_generator_loss(scores.float())
            return terms

    def _silhouette_rows(self, batch: dict) -> torch.Tensor:
        """The rows of the batch that get a silhouette term: those with a mask, at most `silhouette_fraction`."""
        rows = torch.nonzero(batch["has_mask"], as_tuple=False).flatten()
        keep = max(1, round(self.loss.silhouette_fraction * batch["has_mask"].numel()))
        return rows[:keep]

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ weight · term."""
        return sum(self.weights[name] * value for name, value in terms.items())  # type: ignore[return-value]

    def discriminator_loss(self, disc: nn.Module, real: tuple[torch.Tensor, torch.Tensor],
                           fake: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """LSGAN loss of D on prior samples `real` and the stream's (detached) `fake` (rotmats (B,24,3,3), betas)."""
        real_scores = disc(*real)
        fake_scores = disc(fake[0].detach(), fake[1].detach())
        return losses.lsgan_discriminator_loss(real_scores.float(), fake_scores.float())
