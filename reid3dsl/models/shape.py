"""The 3D shape stream: E_3D trunk, E_pose (θ, ψ by HMR-style iterative regression from spatial features) and
E_shape (F_shape with multi-granularity parts → β and per-vertex displacement δ)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pytorch3d.transforms import matrix_to_rotation_6d, rotation_6d_to_matrix
from torch import nn

from reid3dsl.models.heads import BNNeck
from reid3dsl.profiling import section

NUM_JOINTS = 24
# E_pose reads the trunk's feature map reduced to SPATIAL_CHANNELS and pooled to this grid (rows, columns) of an
# upright crop: where the limbs are is what the global average (pushed towards invariance by the ReID losses)
# throws away.
POSE_GRID, SPATIAL_CHANNELS = (8, 4), 32
# part maps (B, K, h, w) for the rotations (B,24,3,3) and camera (B,3) of E_pose on an (h, w) feature map
PartLocator = Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], torch.Tensor]


def mean_rotation(rotmats: torch.Tensor) -> torch.Tensor:
    """The chordal mean of rotations (N, J, 3, 3) over N → (J, 3, 3): the mean 6D representation, re-orthonormalised."""
    return rotation_6d_to_matrix(matrix_to_rotation_6d(rotmats).mean(dim=0))


class PoseRegressor(nn.Module):
    """E_pose: E_3D feature map → θ (24 joints, 6D) and weak-perspective camera ψ = (s, tx, ty).

    The map is reduced by a 1x1 convolution and pooled to `POSE_GRID` cells, concatenated with its global average;
    HMR-style, starting from mean parameters, `iterations` times [features, θ, ψ] → (Δθ, Δψ).
    forward(fmap (B,C,h,w)) → (rotmats (B,24,3,3), psi (B,3)).
    """

    def __init__(self, channels: int, mean_pose: torch.Tensor, mean_cam: torch.Tensor, iterations: int) -> None:
        super().__init__()
        self.iterations = iterations
        self.register_buffer("init_pose", matrix_to_rotation_6d(mean_pose).reshape(-1).float())
        self.register_buffer("init_cam", mean_cam.float())
        self.reduce = nn.Sequential(nn.Conv2d(channels, SPATIAL_CHANNELS, 1, bias=False),
                                    nn.BatchNorm2d(SPATIAL_CHANNELS), nn.ReLU(inplace=True))
        in_dim = channels + SPATIAL_CHANNELS * POSE_GRID[0] * POSE_GRID[1]
        hidden = 1024
        self.mlp = nn.Sequential(
            nn.Linear(in_dim + NUM_JOINTS * 6 + 3, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
        )
        self.dec_pose = nn.Linear(hidden, NUM_JOINTS * 6)
        self.dec_cam = nn.Linear(hidden, 3)
        for layer in (self.dec_pose, self.dec_cam):
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = fmap.shape[0]
        spatial = nn.functional.adaptive_avg_pool2d(self.reduce(fmap), POSE_GRID).flatten(1)
        feat = torch.cat([fmap.mean(dim=(2, 3)), spatial], dim=1)
        pose = self.init_pose.expand(batch, -1).to(feat.dtype)
        cam = self.init_cam.expand(batch, -1).to(feat.dtype)
        for _ in range(self.iterations):
            hidden = self.mlp(torch.cat([feat, pose, cam], dim=1))
            pose = pose + self.dec_pose(hidden)
            cam = cam + self.dec_cam(hidden)
        rotmats = rotation_6d_to_matrix(pose.float().reshape(batch, NUM_JOINTS, 6))
        return rotmats, cam.float()


class ShapeEncoder(nn.Module):
    """E_shape with multi-granularity shape features (MGS).

    The E_3D feature map is pooled globally (F_global) and, with MGS, once per body part (`part_groups`: the
    vertex groups of the body model's parts) with the weights of the part's map — the cells where the posed body
    shows that part (`PartLocator`). The global feature predicts β; each part feature predicts δ for its own
    vertices (without MGS the global feature predicts δ for all vertices). F_shape = [F_global, F_part_1..K] is
    the 3D ReID feature.
    forward(fmap (B,C,h,w), part_maps (B,K,h,w) | None) → {"feat": F_shape (B,D), "betas": (B,NB), "delta": (B,V,3)}.
    """

    def __init__(
        self,
        channels: int,
        feat_dim: int,
        num_betas: int,
        num_vertices: int,
        part_groups: list[torch.Tensor] | None,
        max_displacement: float,
    ) -> None:
        super().__init__()
        self.num_vertices = num_vertices
        self.max_displacement = max_displacement
        self.global_fc = nn.Sequential(nn.Linear(channels, feat_dim), nn.BatchNorm1d(feat_dim), nn.ReLU(inplace=True))
        self.beta_head = nn.Linear(feat_dim, num_betas)
        nn.init.xavier_uniform_(self.beta_head.weight, gain=0.01)
        nn.init.zeros_(self.beta_head.bias)
        groups = part_groups if part_groups else [torch.arange(num_vertices)]
        self.mgs = bool(part_groups)
        part_dim = max(feat_dim // 2, 8)
        self.part_fcs = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, part_dim), nn.BatchNorm1d(part_dim), nn.ReLU(inplace=True))
            for _ in groups
        ) if self.mgs else nn.ModuleList()
        in_dims = [part_dim] * len(groups) if self.mgs else [feat_dim]
        self.delta_heads = nn.ModuleList(nn.Linear(d, len(g) * 3) for d, g in zip(in_dims, groups, strict=True))
        for head in self.delta_heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        for i, g in enumerate(groups):
            self.register_buffer(f"group_{i}", g.long(), persistent=False)
        self.out_dim = feat_dim + (part_dim * len(groups) if self.mgs else 0)

    def groups(self) -> list[torch.Tensor]:
        """The vertex index groups whose δ each head predicts (one per part with MGS, else all vertices)."""
        return [getattr(self, f"group_{i}") for i in range(len(self.delta_heads))]

    def forward(self, fmap: torch.Tensor, part_maps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        batch = fmap.shape[0]
        f_global = self.global_fc(fmap.mean(dim=(2, 3)))
        betas = self.beta_head(f_global).float()
        delta = fmap.new_zeros(batch, self.num_vertices, 3, dtype=torch.float32)
        if self.mgs:
            assert part_maps is not None and part_maps.shape[1] == len(self.part_fcs), "MGS needs one map per part"
            pooled = torch.einsum("bchw,bkhw->bkc", fmap, part_maps.to(fmap.dtype))
            sources = [fc(pooled[:, k]) for k, fc in enumerate(self.part_fcs)]
            feat = torch.cat([f_global, *sources], dim=1)
        else:
            sources = [f_global]
            feat = f_global
        for source, head, group in zip(sources, self.delta_heads, self.groups(), strict=True):
            part_delta = torch.tanh(head(source).float()).reshape(batch, -1, 3) * self.max_displacement
            delta = delta.index_copy(1, group, part_delta)
        return {"feat": feat, "betas": betas, "delta": delta}


class ShapeStream(nn.Module):
    """E_3D → (E_pose, E_shape); forward(images (B,3,H,W), locate) →
    {"rotmats" (B,24,3,3), "cam" (B,3), "betas" (B,NB), "delta" (B,V,3), "feat" F_shape, "bn_feat", "logits"}.
    With MGS, `locate` maps E_pose's output to the part maps E_shape pools with."""

    def __init__(self, trunk: nn.Module, channels: int, pose: PoseRegressor, shape: ShapeEncoder,
                 num_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.pose = pose
        self.shape = shape
        self.neck = BNNeck(shape.out_dim, num_classes)

    def forward(self, images: torch.Tensor, locate: PartLocator | None = None) -> dict[str, torch.Tensor]:
        with section("backbones"):
            fmap = self.trunk(images)
        rotmats, cam = self.pose(fmap)
        part_maps = None
        if self.shape.mgs:
            assert locate is not None, "MGS needs a part locator"
            part_maps = locate(rotmats, cam, (fmap.shape[2], fmap.shape[3]))
        out = self.shape(fmap, part_maps)
        bn_feat, logits = self.neck(out["feat"])
        return {"rotmats": rotmats, "cam": cam, **out, "bn_feat": bn_feat, "logits": logits}
