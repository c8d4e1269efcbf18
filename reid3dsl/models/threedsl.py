"""The 3DSL meta-architecture: what a 3DSL model consists of, built from the config in one place.

A `ThreeDSL` model is an RGB stream (E_rgb → F_rgb, identity head) and/or a 3D stream (E_3D → E_pose: θ, ψ;
E_shape: F_shape, β, δ; identity head), plus the SMPL+D body model and the camera that carry the 3D stream's
output back to the image (`project`, `silhouettes`) and tell MGS where each body part appears (`locate_parts`).
`ThreeDSL.from_config` builds it; the class takes plain modules.
`Switches` answers, once, which streams and which loss terms are on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reid3dsl.body.camera import normalized_focal, project_points, weak_perspective_to_translation
from reid3dsl.body.render import SilhouetteRenderer
from reid3dsl.body.smpld import SMPLD
from reid3dsl.config import Config, TrainConfig
from reid3dsl.models.backbones import build_backbone
from reid3dsl.models.rgb import RGBStream
from reid3dsl.models.shape import PoseRegressor, ShapeEncoder, ShapeStream
from reid3dsl.profiling import section

STREAMS = {"rgb": frozenset({"rgb"}), "3d": frozenset({"shape"}), "both": frozenset({"rgb", "shape"})}
# Parameters of the 3D estimator (E_3D, E_pose, E_shape): everything of the 3D stream but its identity head.
ESTIMATOR_PREFIX, SHAPE_HEAD_PREFIX = "shape.", "shape.neck."


def is_estimator(name: str) -> bool:
    """Whether the parameter or state-dict key `name` belongs to the 3D estimator."""
    return name.startswith(ESTIMATOR_PREFIX) and not name.startswith(SHAPE_HEAD_PREFIX)


@dataclass(frozen=True)
class Switches:
    """Which streams are built and which loss terms are on — decided here, read everywhere else."""

    streams: frozenset[str]
    silhouette: bool
    adversarial: bool

    @property
    def has_3d(self) -> bool:
        return "shape" in self.streams

    @classmethod
    def from_config(cls, cfg: Config) -> Switches:
        streams = STREAMS[cfg.model.streams]
        has_3d = "shape" in streams
        return cls(streams, silhouette=has_3d and cfg.loss.silhouette, adversarial=has_3d and cfg.loss.adversarial)


class ThreeDSL(nn.Module):
    """forward(image (B,3,H,W), shape_image (B,3,h,w) | None) → {"rgb": {...}, "shape": {...}} for the streams built.

    The body model is part of the module (it moves with `.to()`) but not of its state dict: a real SMPL file is
    the user's licensed copy, loaded from `body.model_path`, never written into a model file."""

    def __init__(self, switches: Switches, rgb: RGBStream | None, shape: ShapeStream | None, body: SMPLD | None,
                 renderer: SilhouetteRenderer | None, focal: float, shape_size: tuple[int, int]) -> None:
        super().__init__()
        if (rgb is not None) != ("rgb" in switches.streams) or (shape is not None) != switches.has_3d:
            raise ValueError(f"streams {sorted(switches.streams)} do not match the modules given")
        if switches.has_3d and body is None:
            raise ValueError("the 3D stream needs a body model")
        self.switches = switches
        self.rgb = rgb
        self.shape = shape
        self.body = body
        if body is not None:
            for module in body.modules():
                for name, buffer in list(module.named_buffers(recurse=False)):
                    module.register_buffer(name, buffer, persistent=False)
        self.renderer = renderer
        self.focal = focal
        self.shape_size = shape_size

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int, body: SMPLD | None = None,
                    mean_pose: torch.Tensor | None = None) -> ThreeDSL:
        """The model of `cfg` for `num_classes` training identities. The 3D stream's body model and its regressor's
        starting pose (24, 3, 3) are loaded from `cfg.body` unless given (the pose: the prior's mean pose, upright
        and facing the camera)."""
        switches = Switches.from_config(cfg)
        m = cfg.model
        rgb = shape = renderer = None
        if "rgb" in switches.streams:
            trunk, channels = build_backbone(m.backbone, m.pretrained_path, m.last_stride)
            rgb = RGBStream(trunk, channels, num_classes)
        if switches.has_3d:
            from reid3dsl.body.smpld import load_body_model

            body = body if body is not None else load_body_model(cfg.body)
            if mean_pose is None:
                from reid3dsl.body.prior import load_prior

                mean_pose = prior_mean_pose(load_prior(cfg.body))
            trunk, channels = build_backbone(m.shape_backbone, m.shape_pretrained_path, m.last_stride)
            pose = PoseRegressor(channels, mean_pose, torch.tensor([0.9, 0.0, 0.0]), m.regressor_iterations)
            groups = [g.cpu() for g in body.part_vertex_groups(m.num_parts)] if m.mgs else None
            encoder = ShapeEncoder(channels, m.shape_feat_dim, cfg.body.num_betas, body.num_vertices, groups,
                                   m.max_displacement)
            shape = ShapeStream(trunk, channels, pose, encoder, num_classes)
            renderer = SilhouetteRenderer(cfg.body)
        return cls(switches, rgb, shape, body if switches.has_3d else None, renderer,
                   normalized_focal(cfg.body.focal_length, cfg.body.focal_res),
                   (cfg.data.shape_height, cfg.data.shape_width))

    def forward(self, image: torch.Tensor, shape_image: torch.Tensor | None = None) -> dict[str, dict]:
        out: dict[str, dict] = {}
        with section("heads"):  # the trunks inside are "backbones"
            if self.rgb is not None:
                out["rgb"] = self.rgb(image)
            if self.shape is not None:
                out["shape"] = self.shape(image if shape_image is None else shape_image, self.locate_parts)
        return out

    @torch.no_grad()
    def extract(self, image: torch.Tensor, shape_image: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Test-time features: "rgb" F_rgb, "shape" F_shape (both after BNNeck) and "fused", the concatenation of
        the L2-normalised two — for the streams built. Each (B, D), float32. With the 3D stream also "betas", its
        body shape estimate (B, NB), for measuring shape recovery."""
        out = self.forward(image, shape_image)
        feats = {name: out[name]["bn_feat"].float() for name in ("rgb", "shape") if name in out}
        if len(feats) == 2:
            feats["fused"] = torch.cat([F.normalize(feats["rgb"], dim=1), F.normalize(feats["shape"], dim=1)], dim=1)
        if "shape" in out:
            feats["betas"] = out["shape"]["betas"].float()
        return feats

    def project(self, shape_out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Body mesh, camera and 2D keypoints of the 3D stream's output (fp32, outside autocast); without "delta"
        the body has no displacement.

        → {"vertices" (B,V,3), "cam_t" (B,3), "keypoints_2d" (B,17,2) in pixels of the 3D stream's input}."""
        assert self.body is not None, "project() needs the 3D stream"
        delta = shape_out.get("delta")
        with torch.autocast(shape_out["cam"].device.type, enabled=False):
            body = self.body(shape_out["betas"].float(), shape_out["rotmats"].float(),
                             None if delta is None else delta.float())
            cam_t = weak_perspective_to_translation(shape_out["cam"].float(), self.focal)
            kp2d = project_points(body.keypoints, cam_t, self.shape_size, self.focal)
        return {"vertices": body.vertices, "cam_t": cam_t, "keypoints_2d": kp2d}

    @torch.no_grad()
    def locate_parts(self, rotmats: torch.Tensor, cam: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Where each MGS part appears: the share of the part's vertices — of the mean-shape body in the pose and
        camera E_pose predicts — that project into each cell of an (h, w) grid over the 3D stream's input.
        → (B, K, h, w), each map summing to 1 (uniform for a part entirely outside the crop). No gradient: the
        maps route features, they are not a loss."""
        assert self.body is not None and self.shape is not None, "locate_parts() needs the 3D stream"
        groups = self.shape.shape.groups()
        h, w = grid
        b = rotmats.shape[0]
        mean_shape = rotmats.new_zeros(b, self.body.num_betas, dtype=torch.float32)
        posed = self.project({"betas": mean_shape, "rotmats": rotmats, "cam": cam})
        with torch.autocast(cam.device.type, enabled=False):
            px = project_points(posed["vertices"], posed["cam_t"], self.shape_size, self.focal)
            height, width = self.shape_size
            col = torch.floor(px[..., 0] * (w / width)).long()
            row = torch.floor(px[..., 1] * (h / height)).long()
            inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
            cell = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1))
            maps = px.new_zeros(b, len(groups), h * w)
            for k, group in enumerate(groups):
                maps[:, k].scatter_add_(1, cell[:, group], inside[:, group].float())
            total = maps.sum(dim=2, keepdim=True)
            maps = torch.where(total > 0, maps / total.clamp_min(1.0), torch.full_like(maps, 1.0 / (h * w)))
        return maps.reshape(b, len(groups), h, w)

    def silhouettes(self, projected: dict[str, torch.Tensor], size: tuple[int, int],
                    blur_px: float | None = None) -> torch.Tensor:
        """Soft silhouettes (B, *size) in [0, 1] of `project()`'s output (differentiable); `blur_px` overrides the
        configured edge width (`SilhouetteRenderer.render`)."""
        assert self.body is not None and self.renderer is not None, "silhouettes() needs the 3D stream"
        return self.renderer.render(projected["vertices"], self.body.faces, projected["cam_t"], size, blur_px)

    def param_groups(self, train: TrainConfig) -> list[dict[str, Any]]:
        """Optimizer groups: the ReID parts at `train.lr`, the 3D estimator (E_3D, E_pose, E_shape) at
        `train.lr_3d`; no weight decay on norms and biases."""
        groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if p.requires_grad:
                groups.setdefault(("3d" if is_estimator(name) else "reid", p.ndim > 1), []).append(p)
        return [
            {"params": ps, "lr": train.lr_3d if kind == "3d" else train.lr,
             "weight_decay": train.weight_decay if decay else 0.0, "name": f"{kind}{'' if decay else '_no_decay'}"}
            for (kind, decay), ps in sorted(groups.items())
        ]


def prior_mean_pose(prior: Any) -> torch.Tensor:
    """The regressor's starting pose (24, 3, 3): the mean body pose of `prior` (reid3dsl.body.prior), upright and
    facing the camera."""
    from reid3dsl.body.constants import UPRIGHT_FACING_CAMERA
    from reid3dsl.models.shape import mean_rotation

    rotmats, _ = prior.sample(1024, torch.Generator().manual_seed(0))
    mean_pose = mean_rotation(rotmats.float().cpu())
    mean_pose[0] = torch.tensor(UPRIGHT_FACING_CAMERA)
    return mean_pose

