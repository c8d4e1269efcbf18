"""The pose/shape prior: real samples (theta as 24 rotation matrices, beta) for the discriminator.

`AMASSPrior(folder)` reads AMASS-format sequences (`*.npz` with `poses` (N, 156) SMPL-H axis-angle, or
(N, 72) SMPL, and `betas`); SMPL's body joints 0-21 are the first 66 values, the two hand joints are
taken as identity. `StandinPrior` samples natural standing and walking poses within per-joint limits
and beta ~ N(0, I), for the embedded default. Both give the global orientation in the camera frame of
camera.py (an upright person, y down, facing any direction about the vertical), since the
discriminator sees it too; AMASS's z-up world is turned upright and given a random heading.
`load_prior(cfg)` picks one from `body.prior_path`.
"""

from __future__ import annotations

import logging
import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from reid3dsl.body.constants import JOINT, NUM_JOINTS, UPRIGHT_FACING_CAMERA
from reid3dsl.config import BodyConfig
from reid3dsl.errors import UserError
from reid3dsl.log import progress

log = logging.getLogger(__name__)

# Per-joint limits of the stand-in sampler: XYZ Euler angles in degrees (pytorch3d "XYZ", R = Rx Ry Rz) in
# SMPL's rest frame (x: subject's left, y: up, z: forward). Flexion of hips is -x, of knees +x; the left
# elbow flexes about -y, the right about +y; arms come down from the T-pose about z.
_LIMITS_LEFT: dict[str, tuple[tuple[float, float], ...]] = {
    "left_hip": ((-110, 35), (-40, 40), (-25, 45)),
    "left_knee": ((0, 145), (-5, 5), (-5, 5)),
    "left_ankle": ((-35, 45), (-20, 20), (-20, 20)),
    "left_foot": ((-30, 30), (-10, 10), (-10, 10)),
    "left_collar": ((-15, 15), (-20, 20), (-15, 25)),
    "left_shoulder": ((-100, 70), (-90, 45), (-95, 45)),
    "left_elbow": ((-15, 15), (-150, 0), (-15, 15)),
    "left_wrist": ((-60, 60), (-30, 30), (-70, 70)),
    "left_hand": ((-20, 20), (-20, 20), (-20, 20)),
}
_LIMITS_CENTRE: dict[str, tuple[tuple[float, float], ...]] = {
    "spine1": ((-20, 40), (-30, 30), (-25, 25)),
    "spine2": ((-15, 25), (-25, 25), (-20, 20)),
    "spine3": ((-15, 25), (-25, 25), (-20, 20)),
    "neck": ((-35, 45), (-45, 45), (-30, 30)),
    "head": ((-35, 45), (-50, 50), (-30, 30)),
}


def _mirror(limits: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    # Mirroring x → -x keeps rotations about x and negates those about y and z.
    (x0, x1), (y0, y1), (z0, z1) = limits
    return (x0, x1), (-y1, -y0), (-z1, -z0)


JOINT_LIMITS_DEG: dict[str, tuple[tuple[float, float], ...]] = {
    **_LIMITS_CENTRE,
    **_LIMITS_LEFT,
    **{name.replace("left_", "right_"): _mirror(lim) for name, lim in _LIMITS_LEFT.items()},
}


def upright_orientation(heading: torch.Tensor) -> torch.Tensor:
    """Global orientations (n, 3, 3) of upright bodies turned by `heading` (n,) radians about their vertical
    axis, in the camera frame (heading 0: facing the camera, pi/2: facing the right of the image)."""
    from pytorch3d.transforms import axis_angle_to_matrix

    turn = axis_angle_to_matrix(heading[:, None].float() * torch.tensor([0.0, 1.0, 0.0]))
    return torch.tensor(UPRIGHT_FACING_CAMERA, dtype=torch.float32) @ turn


class PosePrior:
    """A source of real (theta, beta): `sample(n, generator)` → (rotmats (n, 24, 3, 3), betas (n, NB))."""

    num_betas: int

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def sample_axis_angle(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `sample`, with the pose as axis-angle (n, 24, 3) (e.g. for rendering data)."""
        from pytorch3d.transforms import matrix_to_axis_angle

        rotmats, betas = self.sample(n, generator)
        return matrix_to_axis_angle(rotmats), betas


class StandinPrior(PosePrior):
    """Natural standing (40 %) and walking (60 %) poses with per-joint noise, clipped to joint limits,
    any heading about the vertical, beta ~ N(0, I)."""

    def __init__(self, num_betas: int = 10, noise_deg: float = 4.0) -> None:
        self.num_betas = num_betas
        self.noise = noise_deg
        lo = torch.zeros(NUM_JOINTS, 3)
        hi = torch.zeros(NUM_JOINTS, 3)
        for name, lim in JOINT_LIMITS_DEG.items():
            lo[JOINT[name]] = torch.tensor([a for a, _ in lim], dtype=torch.float32)
            hi[JOINT[name]] = torch.tensor([b for _, b in lim], dtype=torch.float32)
        self.lower, self.upper = lo, hi  # (24, 3) degrees; joint 0 (global) unused

    def body_euler(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Euler angles (n, 24, 3) in degrees of the body joints (row 0, the global orientation, is zero)."""

        def uni(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=generator)

        e = torch.zeros(n, NUM_JOINTS, 3)
        walking = torch.rand(n, generator=generator) < 0.6
        phase = uni(0.0, 2 * math.pi)
        amp = torch.where(walking, uni(0.4, 1.0), torch.zeros(n))
        sin, cos = torch.sin(phase), torch.cos(phase)
        j = JOINT
        # arms down from the T-pose, elbows a little bent
        e[:, j["left_shoulder"], 2] = -uni(62.0, 82.0)
        e[:, j["right_shoulder"], 2] = uni(62.0, 82.0)
        e[:, j["left_elbow"], 1] = -uni(3.0, 25.0) - 15 * amp
        e[:, j["right_elbow"], 1] = uni(3.0, 25.0) + 15 * amp
        # standing: feet a little apart, knees nearly straight, the head looking around
        e[:, j["left_hip"], 2] = uni(0.0, 8.0) * (~walking)
        e[:, j["right_hip"], 2] = -uni(0.0, 8.0) * (~walking)
        e[:, j["left_knee"], 0] = uni(0.0, 8.0)
        e[:, j["right_knee"], 0] = uni(0.0, 8.0)
        e[:, j["head"], 1] = 12.0 * torch.randn(n, generator=generator)
        # walking: legs swing in antiphase, the swinging leg's knee bends, arms swing against the legs
        e[:, j["left_hip"], 0] += -28 * amp * sin
        e[:, j["right_hip"], 0] += 28 * amp * sin
        e[:, j["left_knee"], 0] += amp * (45 * cos.clamp_min(0) ** 1.5 + 5)
        e[:, j["right_knee"], 0] += amp * (45 * (-cos).clamp_min(0) ** 1.5 + 5)
        e[:, j["left_ankle"], 0] += 12 * amp * sin
        e[:, j["right_ankle"], 0] += -12 * amp * sin
        e[:, j["left_shoulder"], 0] += 22 * amp * sin
        e[:, j["right_shoulder"], 0] += -22 * amp * sin
        e[:, j["spine2"], 1] += 6 * amp * sin
        e[:, 1:] += self.noise * torch.randn(n, NUM_JOINTS - 1, 3, generator=generator)
        e[:, 1:] = torch.maximum(torch.minimum(e[:, 1:], self.upper[1:]), self.lower[1:])
        return e

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        from pytorch3d.transforms import euler_angles_to_matrix

        euler = self.body_euler(n, generator)
        rot = euler_angles_to_matrix(torch.deg2rad(euler), "XYZ")
        heading = 2 * math.pi * torch.rand(n, generator=generator)
        tilt = torch.deg2rad(3.0 * torch.randn(n, 3, generator=generator))
        tilt[:, 1] = 0.0
        rot[:, 0] = upright_orientation(heading) @ euler_angles_to_matrix(tilt, "XYZ")
        return rot, torch.randn(n, self.num_betas, generator=generator)


class AMASSPrior(PosePrior):
    """Frames of AMASS-format sequences under `folder` (every `frame_stride`-th frame of each file)."""

    def __init__(self, folder: str | Path, num_betas: int = 10, frame_stride: int = 1) -> None:
        from pytorch3d.transforms import axis_angle_to_matrix

        root = Path(folder)
        if not root.is_dir():
            raise UserError(f"body.prior_path '{root}': not a folder (expected a folder of AMASS-format .npz files)")
        files = sorted(root.rglob("*.npz"))
        if not files:
            raise UserError(f"body.prior_path '{root}': no .npz files in it (expected AMASS-format sequences)")
        self.num_betas = num_betas
        poses, betas = [], []
        self.skipped: dict[str, str] = {}
        for path in progress(files, desc="pose prior", unit="file"):
            try:
                with np.load(path) as data:
                    if "poses" not in data:
                        raise ValueError("no 'poses' array (a shape-only file?)")
                    p = np.asarray(data["poses"], dtype=np.float32)[::frame_stride]
                    b = np.asarray(data["betas"], dtype=np.float32).reshape(-1) if "betas" in data else np.zeros(0)
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
                self.skipped[str(path)] = str(exc)
                continue
            if p.ndim != 2 or p.shape[1] < 66 or not np.isfinite(p).all():
                self.skipped[str(path)] = f"poses of shape {p.shape}: expected (N, 156), (N, 72) or (N, >= 66), finite"
                continue
            body = p[:, :72] if p.shape[1] == 72 else np.concatenate([p[:, :66], np.zeros((len(p), 6), np.float32)], 1)
            poses.append(body.reshape(-1, NUM_JOINTS, 3))
            shape = np.zeros(num_betas, np.float32)
            shape[: min(num_betas, b.size)] = b[:num_betas]
            betas.append(np.broadcast_to(shape, (len(p), num_betas)))
        if self.skipped:
            log.warning("pose prior: skipped %d of %d files under %s (first: %s: %s)", len(self.skipped), len(files),
                        root, *next(iter(self.skipped.items())))
        if not poses:
            raise UserError(f"body.prior_path '{root}': none of its {len(files)} .npz files is a readable "
                            "AMASS-format sequence (expected 'poses' (N, 156) and 'betas')")
        self.rotmats = axis_angle_to_matrix(torch.from_numpy(np.concatenate(poses)))  # (N, 24, 3, 3), world z-up
        self.betas = torch.from_numpy(np.concatenate(betas).copy())
        log.info("pose prior: %d frames from %d files under %s", len(self.rotmats), len(poses), root)

    def __len__(self) -> int:
        return len(self.rotmats)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self), (n,), generator=generator)
        rot = self.rotmats[idx].clone()
        # AMASS's world is z-up: turn it y-up (-90° about x), give a random heading, then the camera's flip.
        z_up_to_y_up = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
        heading = 2 * math.pi * torch.rand(n, generator=generator)
        rot[:, 0] = upright_orientation(heading) @ z_up_to_y_up @ rot[:, 0]
        return rot, self.betas[idx].clone()


def load_prior(cfg: BodyConfig) -> PosePrior:
    """AMASSPrior over body.prior_path if set, else the StandinPrior."""
    if cfg.prior_path:
        return AMASSPrior(cfg.prior_path, cfg.num_betas, cfg.prior_frame_stride)
    return StandinPrior(cfg.num_betas)

