"""The stand-in body: a generated SMPL-format model for machines without the licensed SMPL file.

`ensure_standin(out_dir)` writes `out_dir/smpl/SMPL_NEUTRAL.pkl` (the keys and shapes smplx reads:
v_template, shapedirs, posedirs, J_regressor, weights, kintree_table, f) and `out_dir/smpl/vertex_ids.json`
(this mesh's vertices for the 21 points smplx reads from vertices), once; later calls reuse them.

How the body is made. A person is a smooth union of anatomical primitives (ellipsoids and round
cones for pelvis, belly, chest, shoulders, neck, head, limbs, hands, feet) laid on SMPL's 24-joint
skeleton at human proportions (1.7 m, y up, x to the subject's left, z forward, T-pose). The surface
mesh has a fixed tube topology: a torso tube closed by the head, two arm tubes grafted onto holes in
the torso's sides and two leg tubes hung from the crotch; every vertex is found by casting a ray
from the skeleton to the implicit surface, so the same topology fits any body. 13 body measurements
(stature, leg and arm length, girth, belly, shoulder and hip width, chest depth, limb and thigh
thickness, neck length, head size, foot length) are sampled for a population of bodies; the
template is the mean body, the shape blend shapes are the population's principal components
scaled to unit variance (so beta ~ N(0, I) gives plausible people), the joint regressor is fitted
over the population (exact on the template), and skinning weights fall off with the distance to
the bones of each body region. Pose blend shapes are zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reid3dsl.body.constants import JOINT, NUM_JOINTS, SMPL_PARENTS
from reid3dsl.errors import UserError, cli_main
from reid3dsl.log import progress, setup_logging

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
RESOLUTIONS = {"low": 1, "full": 3}  # refinement of the base tube layout (low: ~1.3k faces, full: ~11k)
NUM_SHAPE_COMPONENTS = 10
POPULATION = 64

# Body measurements as multiplicative factors around the mean body, with their standard deviations.
# Deliberately a little wider than real adults so that identities differ clearly in silhouette.
PARAMS = ("stature", "legs", "arms", "girth", "belly", "shoulders", "hips", "chest", "limbs", "neck",
          "head", "thighs", "feet")
PARAM_STD = np.array([0.075, 0.05, 0.05, 0.15, 0.15, 0.10, 0.10, 0.10, 0.14, 0.12, 0.05, 0.10, 0.06])
# Correlations between measurements (heavier people have bigger bellies and limbs; broad shoulders
# tend to go with narrower hips).
_CORRELATED = {("girth", "belly"): 0.6, ("girth", "limbs"): 0.5, ("girth", "thighs"): 0.4,
               ("girth", "chest"): 0.4, ("shoulders", "hips"): -0.3, ("stature", "head"): 0.3}

REGIONS = ("torso", "left_leg", "right_leg", "left_arm", "right_arm")


def _param_covariance() -> np.ndarray:
    corr = np.eye(len(PARAMS))
    for (a, b), rho in _CORRELATED.items():
        i, j = PARAMS.index(a), PARAMS.index(b)
        corr[i, j] = corr[j, i] = rho
    return corr * np.outer(PARAM_STD, PARAM_STD)


# ----------------------------------------------------------------------------------------------
# Skeleton and primitives, batched over S bodies: factors (S, P) → landmarks (S, 3) each.


def _landmarks(f: torch.Tensor) -> dict[str, torch.Tensor]:
    """Joint and landmark positions (S, 3) of bodies with measurement factors `f` (S, P)."""
    p = {name: f[:, i] for i, name in enumerate(PARAMS)}
    s = 1.70 * p["stature"]
    zero = torch.zeros_like(s)

    def pt(x: torch.Tensor | float, y: torch.Tensor, z: torch.Tensor | float) -> torch.Tensor:
        return torch.stack(torch.broadcast_tensors(zero + x, y, zero + z), dim=-1)

    # Heights: legs from the floor up, head and neck from the top down, the trunk spans what is between
    # (so landmarks stay in order for any measurements).
    hip_y = 0.515 * s * p["legs"]
    head = p["head"]
    head_c_y = s - 0.066 * s * head
    head_y = head_c_y - 0.042 * s * head
    neck_y = head_y - 0.057 * s * p["neck"]
    trunk = (neck_y - hip_y) / 0.32  # the mean trunk (hip joint to neck) is 0.32 of the stature
    lm: dict[str, torch.Tensor] = {}
    lm["crotch_top"] = pt(0.0, hip_y - 0.02 * s, 0.0)
    lm["pelvis"] = pt(0.0, hip_y + 0.055 * trunk, -0.005 * s)
    lm["spine1"] = pt(0.0, hip_y + 0.12 * trunk, -0.01 * s)
    lm["spine2"] = pt(0.0, hip_y + 0.195 * trunk, -0.01 * s)
    lm["spine3"] = pt(0.0, hip_y + 0.225 * trunk, -0.008 * s)
    shoulder_y = hip_y + 0.30 * trunk
    lm["neck"] = pt(0.0, neck_y, -0.012 * s)
    lm["head_centre"] = pt(0.0, head_c_y, 0.005 * s)
    lm["head"] = pt(0.0, head_y, -0.002 * s)
    lm["head_top"] = pt(0.0, s, 0.005 * s)
    arm_z = -0.006 * s
    for side, sign in (("left", 1.0), ("right", -1.0)):
        sh_x = 0.105 * s * p["shoulders"]
        lm[f"{side}_collar"] = pt(sign * 0.045 * s * p["shoulders"], shoulder_y - 0.012 * s, -0.012 * s)
        lm[f"{side}_shoulder"] = pt(sign * sh_x, shoulder_y, arm_z)
        elbow_x = sh_x + 0.17 * s * p["arms"]
        wrist_x = elbow_x + 0.145 * s * p["arms"]
        lm[f"{side}_elbow"] = pt(sign * elbow_x, shoulder_y, arm_z - 0.004 * s)
        lm[f"{side}_wrist"] = pt(sign * wrist_x, shoulder_y, arm_z)
        lm[f"{side}_hand"] = pt(sign * (wrist_x + 0.05 * s * p["arms"]), shoulder_y, arm_z)
        lm[f"{side}_fingertip"] = pt(sign * (wrist_x + 0.108 * s * p["arms"]), shoulder_y, arm_z)
        hip_x = 0.052 * s * p["hips"]
        lm[f"{side}_hip"] = pt(sign * hip_x, hip_y, 0.0)
        lm[f"{side}_knee"] = pt(sign * 0.056 * s * (0.5 + 0.5 * p["hips"]), 0.285 * s * p["legs"], 0.004 * s)
        ankle_x = 0.058 * s
        lm[f"{side}_ankle"] = pt(sign * ankle_x, 0.045 * s, -0.008 * s)
        lm[f"{side}_foot"] = pt(sign * ankle_x, 0.014 * s, 0.075 * s * p["feet"])
        lm[f"{side}_toe"] = pt(sign * ankle_x, 0.012 * s, 0.118 * s * p["feet"])
        lm[f"{side}_heel"] = pt(sign * ankle_x, 0.012 * s, -0.036 * s * p["feet"])
    # Centre every body vertically on the origin, as SMPL's template is roughly centred.
    shift = torch.stack([zero, -s / 2, zero], dim=-1)
    return {k: v + shift for k, v in lm.items()}


@dataclass(frozen=True)
class _Prim:
    """A primitive: an ellipsoid (a = centre, r = radii (S, 3)) or a round cone (a, b, r1, r2)."""

    kind: str
    a: torch.Tensor
    b: torch.Tensor | None = None
    r: torch.Tensor | None = None
    r1: torch.Tensor | None = None
    r2: torch.Tensor | None = None


def _primitives(lm: dict[str, torch.Tensor], f: torch.Tensor) -> dict[str, _Prim]:
    """The implicit body's primitives for bodies with landmarks `lm` and factors `f` (S, P)."""
    p = {name: f[:, i] for i, name in enumerate(PARAMS)}
    s = 1.70 * p["stature"]
    g = p["girth"]
    gs = g.sqrt()
    lim = p["limbs"] * gs
    trunk = (lm["neck"][:, 1] - lm["left_hip"][:, 1]) / 0.32  # as in _landmarks

    def vec(*xyz: torch.Tensor | float) -> torch.Tensor:
        return torch.stack(torch.broadcast_tensors(*(s * 0 + c for c in xyz)), dim=-1)

    def ell(centre: torch.Tensor, rx: torch.Tensor, ry: torch.Tensor, rz: torch.Tensor) -> _Prim:
        return _Prim("ellipsoid", centre, r=vec(rx, ry, rz))

    def cone(a: torch.Tensor, b: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor) -> _Prim:
        return _Prim("cone", a, b, r1=r1, r2=r2)

    pr: dict[str, _Prim] = {}
    hip_mid = (lm["left_hip"] + lm["right_hip"]) / 2
    pr["pelvis"] = ell(hip_mid + vec(0.0, 0.03 * s, -0.006 * s), 0.10 * s * p["hips"] * gs, 0.07 * s, 0.066 * s * g)
    pr["belly"] = ell(lm["spine1"] + vec(0.0, 0.005 * s, 0.016 * s * p["belly"]),
                      0.086 * s * g * p["belly"].sqrt(), 0.085 * trunk, 0.06 * s * g * p["belly"])
    pr["chest"] = ell(lm["spine3"] + vec(0.0, -0.012 * s, 0.012 * s),
                      0.096 * s * g * p["shoulders"].sqrt(), 0.105 * trunk, 0.064 * s * g * p["chest"])
    shoulder_off = vec(0.0, -0.006 * s, 0.002 * s)
    pr["shoulders"] = cone(lm["left_shoulder"] * vec(0.9, 1.0, 1.0) + shoulder_off,
                           lm["right_shoulder"] * vec(0.9, 1.0, 1.0) + shoulder_off, 0.036 * s * gs, 0.036 * s * gs)
    pr["neck"] = cone(lm["neck"] + vec(0.0, -0.03 * s, 0.0), lm["head"] + vec(0.0, 0.01 * s, 0.0),
                      0.037 * s * gs, 0.03 * s * gs)
    hd = p["head"] * s
    pr["skull"] = ell(lm["head_centre"], 0.047 * hd, 0.066 * hd, 0.058 * hd)
    pr["jaw"] = ell(lm["head_centre"] + vec(0.0, -0.035 * hd, 0.02 * hd), 0.037 * hd, 0.022 * hd, 0.04 * hd)
    pr["nose"] = ell(lm["head_centre"] + vec(0.0, -0.012 * hd, 0.062 * hd), 0.009 * hd, 0.015 * hd, 0.012 * hd)
    for side in ("left", "right"):
        sh, el, wr = lm[f"{side}_shoulder"], lm[f"{side}_elbow"], lm[f"{side}_wrist"]
        pr[f"{side}_upper_arm"] = cone(sh, el, 0.031 * s * lim, 0.022 * s * lim)
        pr[f"{side}_forearm"] = cone(el, wr, 0.022 * s * lim, 0.0155 * s * lim)
        hand_c = wr + (lm[f"{side}_fingertip"] - wr) * 0.5 + vec(0.0, 0.0, 0.002 * s)
        pr[f"{side}_hand"] = ell(hand_c, 0.056 * s * p["arms"], 0.013 * s * gs, 0.027 * s * gs)
        hip, knee, ankle = lm[f"{side}_hip"], lm[f"{side}_knee"], lm[f"{side}_ankle"]
        pr[f"{side}_thigh"] = cone(hip, knee, 0.05 * s * lim * p["thighs"], 0.031 * s * lim)
        pr[f"{side}_shin"] = cone(knee, ankle, 0.03 * s * lim, 0.018 * s * lim)
        pr[f"{side}_calf"] = ell(knee + 0.32 * (ankle - knee) + vec(0.0, 0.0, -0.012 * s),
                                 0.028 * s * lim, 0.075 * s, 0.031 * s * lim)
        toe, heel = lm[f"{side}_toe"], lm[f"{side}_heel"]
        pr[f"{side}_foot"] = ell((toe + heel) / 2 + vec(0.0, 0.012 * s, 0.0), 0.029 * s * gs, 0.023 * s,
                                 (toe - heel)[:, 2] / 2)
    return pr


# The primitives each region's rays are cast against: a limb's rays must not run into the other
# limb (the thighs touch), and the torso's rays need the limb roots for the shoulders and hips.
_TORSO_PRIMS = ("pelvis", "belly", "chest", "shoulders", "neck", "skull", "jaw", "nose", "left_upper_arm",
                "right_upper_arm", "left_thigh", "right_thigh")
_REGION_PRIMS = {
    "torso": _TORSO_PRIMS,
    **{f"{s}_leg": (f"{s}_thigh", f"{s}_shin", f"{s}_calf", f"{s}_foot") for s in ("left", "right")},
    **{f"{s}_arm": (f"{s}_upper_arm", f"{s}_forearm", f"{s}_hand") for s in ("left", "right")},
}
_SMOOTH = 0.02  # smooth-union radius as a fraction of stature


def _sd_ellipsoid(q: torch.Tensor, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance (S, M) of points q (S, M, 3) to ellipsoids (centre c, radii r: (S, 3))."""
    d = q - c[:, None]
    k0 = (d / r[:, None]).norm(dim=-1)
    k1 = (d / (r[:, None] ** 2)).norm(dim=-1).clamp_min(1e-12)
    return k0 * (k0 - 1.0) / k1


def _sd_round_cone(q: torch.Tensor, a: torch.Tensor, b: torch.Tensor, r1: torch.Tensor,
                   r2: torch.Tensor) -> torch.Tensor:
    """Exact signed distance (S, M) of q (S, M, 3) to round cones from a to b (S, 3), radii r1, r2 (S,)."""
    ba = (b - a)[:, None]
    l2 = (ba * ba).sum(-1)
    rr = (r1 - r2)[:, None]
    a2 = l2 - rr * rr
    il2 = 1.0 / l2
    pa = q - a[:, None]
    y = (pa * ba).sum(-1)
    z = y - l2
    x2 = ((pa * l2[..., None] - ba * y[..., None]) ** 2).sum(-1)
    y2, z2 = y * y * l2, z * z * l2
    k = torch.sign(rr) * rr * rr * x2
    r1b, r2b = r1[:, None], r2[:, None]
    d_end = (x2 + z2).sqrt() * il2 - r2b
    d_start = (x2 + y2).sqrt() * il2 - r1b
    d_side = ((x2 * a2 * il2).clamp_min(0).sqrt() + y * rr) * il2 - r1b
    return torch.where(torch.sign(z) * a2 * z2 > k, d_end, torch.where(torch.sign(y) * a2 * y2 < k, d_start, d_side))


def _sdf(q: torch.Tensor, prims: list[_Prim], k: torch.Tensor) -> torch.Tensor:
    """Smooth union (polynomial smooth minimum, radius k (S,)) of primitives at points q (S, M, 3) → (S, M)."""
    out: torch.Tensor | None = None
    kk = k[:, None]
    for pr in prims:
        if pr.kind == "ellipsoid":
            d = _sd_ellipsoid(q, pr.a, pr.r)
        else:
            d = _sd_round_cone(q, pr.a, pr.b, pr.r1, pr.r2)
        if out is None:
            out = d
        else:
            h = (kk - (out - d).abs()).clamp_min(0) / kk
            out = torch.minimum(out, d) - h * h * kk / 4
    assert out is not None
    return out


def _cast(origins: torch.Tensor, dirs: torch.Tensor, t_max: torch.Tensor, prims: list[_Prim], k: torch.Tensor,
          steps: int = 48, bisections: int = 16) -> torch.Tensor:
    """First exit of rays (origins, dirs (S, M, 3); t_max (S, M)) from the implicit body → points (S, M, 3)."""
    S, M, _ = origins.shape
    ts = torch.linspace(0, 1, steps + 1, dtype=origins.dtype)
    t = t_max[..., None] * ts  # (S, M, steps+1)
    pts = origins[:, :, None] + dirs[:, :, None] * t[..., None]
    val = _sdf(pts.reshape(S, -1, 3), prims, k).reshape(S, M, steps + 1)
    if (val[..., 0] >= 0).any():
        raise RuntimeError("stand-in generator: a ray starts outside the body (skeleton/primitive mismatch)")
    outside = val >= 0
    first = torch.where(outside.any(-1), outside.float().argmax(-1), torch.full_like(val[..., 0], steps).long())
    lo = torch.gather(t, -1, (first - 1).clamp_min(0)[..., None])[..., 0]
    hi = torch.gather(t, -1, first[..., None])[..., 0]
    for _ in range(bisections):
        mid = (lo + hi) / 2
        v = _sdf(origins + dirs * mid[..., None], prims, k)
        lo, hi = torch.where(v < 0, mid, lo), torch.where(v < 0, hi, mid)
    return origins + dirs * ((lo + hi) / 2)[..., None]


# ----------------------------------------------------------------------------------------------
# The tube-topology mesh.


@dataclass
class _Ring:
    """A ring of rays: vertex i starts at `origin` (S, 3) and points along
    cos(lam) (cos(phi_i) e1 + sin(phi_i) e2) + sin(lam) a, with frame a, e1, e2 (S, 3), phi (S, n) and
    elevation lam (S,) or (S, n)."""

    origin: torch.Tensor
    frame: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    phi: torch.Tensor
    lam: torch.Tensor
    t_max: torch.Tensor

    def directions(self) -> torch.Tensor:
        a, e1, e2 = (v[:, None] for v in self.frame)
        lam = (self.lam if self.lam.dim() == 2 else self.lam[:, None])[..., None]
        c, s_ = torch.cos(self.phi)[..., None], torch.sin(self.phi)[..., None]
        return torch.cos(lam) * (c * e1 + s_ * e2) + torch.sin(lam) * a


def _lerp_rings(r0: _Ring, r1: _Ring, w: float) -> _Ring:
    return _Ring(r0.origin + w * (r1.origin - r0.origin), r0.frame, r0.phi + w * (r1.phi - r0.phi),
                 r0.lam + w * (r1.lam - r0.lam), r0.t_max + w * (r1.t_max - r0.t_max))


def _refine(rings: list[_Ring], k: int) -> list[_Ring]:
    """Insert k-1 interpolated rings between consecutive rings."""
    out = [rings[0]]
    for r0, r1 in zip(rings[:-1], rings[1:], strict=True):
        out += [_lerp_rings(r0, r1, j / k) for j in range(1, k)] + [r1]
    return out


def _frame(axis: torch.Tensor, hint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a = axis / axis.norm(dim=-1, keepdim=True)
    e1 = hint - (hint * a).sum(-1, keepdim=True) * a
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    return a, e1, torch.cross(a, e1, dim=-1)


def _strip(lower: list[int], upper: list[int]) -> list[tuple[int, int, int]]:
    """Triangles joining two closed loops of equal length; `lower` must already be used by faces with
    its edges directed lower[i] -> lower[i+1], so the new faces use them reversed (consistent orientation)."""
    n = len(lower)
    tris = []
    for i in range(n):
        j = (i + 1) % n
        tris += [(lower[j], lower[i], upper[i]), (lower[j], upper[i], upper[j])]
    return tris


def _cap(loop: list[int], pole: int) -> list[tuple[int, int, int]]:
    n = len(loop)
    return [(loop[(i + 1) % n], loop[i], pole) for i in range(n)]


def _boundary_loop(faces: list[tuple[int, int, int]], start: int) -> list[int]:
    """The hole boundary through `start`, ordered along existing half-edges (a -> b used by a face)."""
    half = {(a, b) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    nxt = {a: b for a, b in half if (b, a) not in half}
    loop = [start]
    while nxt[loop[-1]] != start:
        loop.append(nxt[loop[-1]])
    return loop


def _loop_angles(pts: torch.Tensor, centre: torch.Tensor, frame: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Unwrapped angles (S, n) of loop points (S, n, 3) around `centre` (S, 3) in the plane (e1, e2)."""
    _, e1, e2 = frame
    d = pts - centre[:, None]
    ang = torch.atan2((d * e2[:, None]).sum(-1), (d * e1[:, None]).sum(-1))
    step = torch.remainder(torch.diff(ang, dim=-1) + math.pi, 2 * math.pi) - math.pi
    return torch.cat([ang[:, :1], ang[:, :1] + step.cumsum(-1)], dim=-1)


def _uniform_like(phi: torch.Tensor) -> torch.Tensor:
    """Evenly spaced angles (S, n) running the same way as `phi` and best aligned with it."""
    n = phi.shape[-1]
    sign = torch.sign(phi[:, -1] - phi[:, 0])[:, None]
    base = sign * 2 * math.pi * torch.arange(n, dtype=phi.dtype) / n
    return base + (phi - base).mean(-1, keepdim=True)


class _Builder:
    """Builds the mesh for a batch of bodies; the topology does not depend on the bodies."""

    def __init__(self, lm: dict[str, torch.Tensor], prims: dict[str, _Prim], stature: torch.Tensor, k: int) -> None:
        self.lm, self.prims, self.k = lm, prims, k
        self.s = stature
        self.smooth = _SMOOTH * stature
        self.verts: list[torch.Tensor] = []  # chunks (S, n, 3)
        self.count = 0
        self.faces: list[tuple[int, int, int]] = []
        self.region: list[int] = []

    def _add(self, pts: torch.Tensor, region: str) -> list[int]:
        ids = list(range(self.count, self.count + pts.shape[1]))
        self.verts.append(pts)
        self.count += pts.shape[1]
        self.region += [REGIONS.index(region)] * pts.shape[1]
        return ids

    def _cast_rings(self, rings: list[_Ring], region: str) -> list[list[int]]:
        origins = torch.cat([r.origin[:, None].expand(-1, r.phi.shape[1], -1) for r in rings], dim=1)
        dirs = torch.cat([r.directions() for r in rings], dim=1)
        t_max = torch.cat([r.t_max[:, None].expand(-1, r.phi.shape[1]) for r in rings], dim=1)
        pts = _cast(origins, dirs, t_max, [self.prims[n] for n in _REGION_PRIMS[region]], self.smooth)
        ids = self._add(pts, region)
        out, at = [], 0
        for r in rings:
            out.append(ids[at:at + r.phi.shape[1]])
            at += r.phi.shape[1]
        return out

    def _cast_pole(self, origin: torch.Tensor, direction: torch.Tensor, t_max: torch.Tensor, region: str) -> int:
        pts = _cast(origin[:, None], direction[:, None], t_max[:, None],
                    [self.prims[n] for n in _REGION_PRIMS[region]], self.smooth)
        return self._add(pts, region)[0]

    def vertex(self, idx: list[int]) -> torch.Tensor:
        allv = torch.cat(self.verts, dim=1)
        return allv[:, idx]

    def build(self) -> None:
        lm, s, k = self.lm, self.s, self.k
        S = s.shape[0]
        one = torch.ones_like(s)
        zero = torch.zeros_like(s)
        ex, ey, ez = (torch.stack([one * (i == j) for j in range(3)], -1) for i in range(3))
        up = (ey, ex, ez)  # frame for horizontal rings: a = +y, angles from +x towards +z
        # ---- torso, neck and head: key rings (origin, elevation) bottom to top
        n_t = 16 * k
        phi_t = (2 * math.pi * torch.arange(n_t, dtype=s.dtype) / n_t).expand(S, -1)

        def at_y(point: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.stack([zero, y, point[:, 2]], -1)

        sh_y = lm["left_shoulder"][:, 1]
        spine = [lm[n] for n in ("pelvis", "spine1", "spine2", "spine3")]
        mid_neck = (lm["neck"] + lm["head"]) / 2
        torso_key = [
            (lm["crotch_top"], 0.0), (at_y(lm["pelvis"], lm["left_hip"][:, 1]), 0.0), (spine[0], 0.0),
            ((spine[0] + spine[1]) / 2, 0.0), (spine[1], 0.0), ((spine[1] + spine[2]) / 2, 0.0), (spine[2], 0.0),
            (at_y(spine[3], (spine[3][:, 1] + sh_y - 0.035 * s) / 2), 0.0),
            (at_y(spine[3], sh_y - 0.035 * s), 0.0),  # armpits: bottom of the arm holes
            (at_y(spine[3], sh_y), 0.0),  # shoulder joints: middle of the arm holes
            (at_y(spine[3], sh_y), 0.5),  # tops of the arm holes: rays tilted up from the shoulder line
            # the slope to the neck, from halfway between the shoulder line and mid-neck (so the rings stay
            # in order for short and long necks alike), steeper at the sides
            ((at_y(spine[3], sh_y) + mid_neck) / 2, 0.3 + 0.2 * torch.cos(phi_t) ** 2),
            (mid_neck, 0.0),
            (lm["head"], 0.0),  # level with the jaw: the front rays make the chin
        ]
        head_lams = (-0.3, 0.1, 0.5, 0.85, 1.2)
        rings = [_Ring(o, up, phi_t, lam + zero[:, None], 0.16 * s) for o, lam in torso_key]
        rings += [_Ring(lm["head_centre"], up, phi_t, lam + zero[:, None], 0.12 * s) for lam in head_lams]
        rings = _refine(rings, k)
        arm_ring0 = 8 * k  # index of the armpit ring after refinement; holes span rings 8k..10k
        torso = self._cast_rings(rings, "torso")
        top = self._cast_pole(lm["head_centre"], ey, 0.12 * s, "torso")
        # bridge across the crotch: rays from the bottom ring's centre, front to back through "down"
        m = 4 * k - 1
        alpha = math.pi * torch.arange(1, m + 1, dtype=s.dtype) / (m + 1)
        bridge_dirs = torch.stack([0 * alpha, -torch.sin(alpha), torch.cos(alpha)], -1).expand(S, -1, -1)
        bridge_pts = _cast(lm["crotch_top"][:, None].expand(-1, m, -1), bridge_dirs, (0.12 * s)[:, None].expand(-1, m),
                           [self.prims[n] for n in _TORSO_PRIMS], self.smooth)
        bridge = self._add(bridge_pts, "torso")  # front to back
        left_cols = {(c + n_t) % n_t for c in range(-k, k)}
        right_cols = {c for c in range(n_t // 2 - k, n_t // 2 + k)}
        for r in range(len(torso) - 1):
            tris = _strip(torso[r], torso[r + 1])
            if arm_ring0 <= r < arm_ring0 + 2 * k:  # leave the arm holes open
                tris = [t for i, t in enumerate(tris) if i // 2 not in left_cols | right_cols]
            self.faces += tris
        self.faces += _cap(torso[-1], top)
        # ---- arms: tubes grafted onto the holes
        for side, sign in (("left", 1.0), ("right", -1.0)):
            col = 0 if sign > 0 else n_t // 2
            loop = _boundary_loop(self.faces, torso[arm_ring0][col])
            self._limb(loop, side, "arm")
        # ---- legs: the left leg's opening is the left half of the bottom ring plus the bridge
        bottom = torso[0]
        left_half = [bottom[(n_t // 4 - i) % n_t] for i in range(n_t // 2 + 1)]  # front → side → back
        self._limb(left_half + bridge[::-1], "left", "leg")
        self._limb(_boundary_loop(self.faces, bottom[n_t // 4]), "right", "leg")

    def _limb(self, loop: list[int], side: str, kind: str) -> None:
        lm, s, k = self.lm, self.s, self.k
        region = f"{side}_{kind}"
        loop_pts = self.vertex(loop)
        if kind == "arm":
            root, mid, end, tip = (lm[f"{side}_{n}"] for n in ("shoulder", "elbow", "wrist", "fingertip"))
            frame = _frame(end - root, torch.tensor([0.0, 0.0, 1.0], dtype=s.dtype).expand_as(root))
            l1, l2, l3 = ((b - a).norm(dim=-1) for a, b in ((root, mid), (mid, end), (end, tip)))
            # distance along the arm from the shoulder joint, relaxation towards even spacing, t_max
            key = [(0.3 * l1, 0.5), (0.65 * l1, 1.0), (l1, 1.0), (l1 + 0.5 * l2, 1.0), (l1 + l2, 1.0),
                   (l1 + l2 + 0.35 * l3, 1.0), (l1 + l2 + 0.75 * l3, 1.0)]
            tmax = 0.06 * s
            cap_origin = root + frame[0] * (l1 + l2 + 0.75 * l3)[:, None]
            cap = [(cap_origin, 0.8)]
            cap_tmax = 0.06 * s
        else:
            root, mid, end = (lm[f"{side}_{n}"] for n in ("hip", "knee", "ankle"))
            frame = _frame(end - root, torch.tensor([1.0, 0.0, 0.0], dtype=s.dtype).expand_as(root))
            l1, l2 = ((b - a).norm(dim=-1) for a, b in ((root, mid), (mid, end)))
            key = [(0.3 * l1, 0.4), (0.65 * l1, 0.8), (l1, 1.0), (l1 + 0.25 * l2, 1.0), (l1 + 0.5 * l2, 1.0),
                   (l1 + 0.78 * l2, 1.0), (l1 + l2, 1.0)]
            tmax = 0.1 * s
            foot_c = torch.stack([end[:, 0], 0.5 * (lm[f"{side}_foot"][:, 1] + end[:, 1]),
                                  0.35 * lm[f"{side}_toe"][:, 2] + 0.65 * lm[f"{side}_heel"][:, 2]], -1)
            cap = [(foot_c, 0.45), (foot_c, 1.0)]
            cap_tmax = 0.12 * s
        phi_loop = _loop_angles(loop_pts, root, frame)
        phi_even = _uniform_like(phi_loop)
        zero = torch.zeros_like(s)
        rings = [_Ring(root + frame[0] * u[:, None], frame, phi_loop + w * (phi_even - phi_loop), zero, tmax + zero)
                 for u, w in key]
        rings += [_Ring(o, frame, phi_even, lam + zero, cap_tmax + zero) for o, lam in cap]
        ids = self._cast_rings(_refine(rings, k), region)
        # rings between the hole and the first ray-cast ring: straight interpolation (full resolution)
        first = self.vertex(ids[0])
        between = [self._add(loop_pts + (first - loop_pts) * (j / k), region) for j in range(1, k)]
        chain = [loop, *between, *ids]
        for a, b in zip(chain[:-1], chain[1:], strict=True):
            self.faces += _strip(a, b)
        tip_origin = rings[-1].origin
        pole = self._cast_pole(tip_origin, frame[0], cap_tmax + zero, region)
        self.faces += _cap(chain[-1], pole)


@dataclass(frozen=True)
class _Bodies:
    vertices: np.ndarray  # (S, V, 3)
    joints: np.ndarray  # (S, 24, 3)
    landmarks: dict[str, np.ndarray]  # name → (S, 3)
    faces: np.ndarray  # (F, 3)
    region: np.ndarray  # (V,)


def _make_bodies(factors: np.ndarray, k: int) -> _Bodies:
    """Meshes (unreferenced vertices dropped) for bodies with measurement factors (S, P)."""
    f = torch.as_tensor(factors, dtype=torch.float32)
    lm = _landmarks(f)
    b = _Builder(lm, _primitives(lm, f), 1.70 * f[:, PARAMS.index("stature")], k)
    b.build()
    verts = torch.cat(b.verts, dim=1)
    faces = np.asarray(b.faces, dtype=np.int64)
    used = np.unique(faces)
    remap = np.full(verts.shape[1], -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    joints = torch.stack([lm[name] for name in _JOINT_LANDMARKS], dim=1)
    # float32 for the ray casting (half the memory traffic), float64 for everything fitted from it
    return _Bodies(verts[:, used].double().numpy(), joints.double().numpy(),
                   {n: v.double().numpy() for n, v in lm.items()}, remap[faces], np.asarray(b.region)[used])


_JOINT_LANDMARKS = ("pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
                    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
                    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                    "left_hand", "right_hand")


# ----------------------------------------------------------------------------------------------
# Rigging: skinning weights, joint regressor, vertex ids.


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (V,) of points p (V, 3) to the segment a-b."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def _bones(lm: dict[str, np.ndarray]) -> list[tuple[int, np.ndarray, np.ndarray, tuple[str, ...]]]:
    """(driving joint, start, end, regions whose vertices it may move) for every bone of the template."""
    torso = ("torso",)
    bones = [
        (JOINT["pelvis"], "pelvis", "spine1", ("torso", "left_leg", "right_leg")),
        (JOINT["pelvis"], "pelvis", "left_hip", ("torso", "left_leg", "right_leg")),
        (JOINT["pelvis"], "pelvis", "right_hip", ("torso", "left_leg", "right_leg")),
        (JOINT["spine1"], "spine1", "spine2", torso), (JOINT["spine2"], "spine2", "spine3", torso),
        (JOINT["spine3"], "spine3", "neck", torso), (JOINT["neck"], "neck", "head", torso),
        (JOINT["head"], "head", "head_top", torso),
    ]
    for side in ("left", "right"):
        arm = ("torso", f"{side}_arm")
        leg = ("torso", f"{side}_leg")
        bones += [
            (JOINT["spine3"], "spine3", f"{side}_collar", arm),
            (JOINT[f"{side}_collar"], f"{side}_collar", f"{side}_shoulder", arm),
            (JOINT[f"{side}_shoulder"], f"{side}_shoulder", f"{side}_elbow", arm),
            (JOINT[f"{side}_elbow"], f"{side}_elbow", f"{side}_wrist", (f"{side}_arm",)),
            (JOINT[f"{side}_wrist"], f"{side}_wrist", f"{side}_hand", (f"{side}_arm",)),
            (JOINT[f"{side}_hand"], f"{side}_hand", f"{side}_fingertip", (f"{side}_arm",)),
            (JOINT[f"{side}_hip"], f"{side}_hip", f"{side}_knee", leg),
            (JOINT[f"{side}_knee"], f"{side}_knee", f"{side}_ankle", (f"{side}_leg",)),
            (JOINT[f"{side}_ankle"], f"{side}_ankle", f"{side}_foot", (f"{side}_leg",)),
            (JOINT[f"{side}_foot"], f"{side}_foot", f"{side}_toe", (f"{side}_leg",)),
        ]
    return [(j, lm[a][0], lm[b][0], regions) for j, a, b, regions in bones]


def _skinning_weights(verts: np.ndarray, region: np.ndarray, lm: dict[str, np.ndarray],
                      power: float = 6.0, keep: int = 4) -> np.ndarray:
    """Weights (V, 24): inverse distance to the bones that may move each vertex, the `keep` largest kept."""
    V = verts.shape[0]
    w = np.zeros((V, NUM_JOINTS))
    for joint, a, b, regions in _bones(lm):
        allowed = np.isin(region, [REGIONS.index(r) for r in regions])
        d = _segment_distance(verts, a, b)
        w[:, joint] = np.maximum(w[:, joint], np.where(allowed, (d + 1e-3) ** -power, 0.0))
    cut = -np.sort(-w, axis=1)[:, keep - 1: keep]
    w = np.where(w >= cut, w, 0.0)
    w /= w.sum(axis=1, keepdims=True)
    w[w < 1e-4] = 0.0
    return w / w.sum(axis=1, keepdims=True)


def _joint_regressor(verts: np.ndarray, joints: np.ndarray, support: int, ridge: float = 1e-3) -> np.ndarray:
    """J_regressor (24, V) fitted over a population: vertices (S, V, 3), joints (S, 24, 3); sample 0 is the
    template and is reproduced exactly. Each joint is an affine combination of its `support` nearest
    template vertices, least-squares over the population, regularised towards equal weights."""
    S, V, _ = verts.shape
    reg = np.zeros((NUM_JOINTS, V))
    for j in range(NUM_JOINTS):
        near = np.argsort(np.linalg.norm(verts[0] - joints[0, j], axis=1))[:support]
        X = verts[:, near]  # (S, K, 3)
        A = np.einsum("skc,slc->kl", X, X)
        b = np.einsum("skc,sc->k", X, joints[:, j])
        lam = ridge * np.trace(A) / support
        u = np.full(support, 1.0 / support)
        C = np.concatenate([X[0].T, np.ones((1, support))], axis=0)  # (4, K)
        c = np.concatenate([joints[0, j], [1.0]])
        kkt = np.block([[2 * (A + lam * np.eye(support)), C.T], [C, np.zeros((4, 4))]])
        sol = np.linalg.solve(kkt, np.concatenate([2 * (b + lam * u), c]))
        reg[j, near] = sol[:support]
    return reg


def _vertex_ids(verts: np.ndarray, region: np.ndarray, lm: dict[str, np.ndarray]) -> dict[str, int]:
    """This mesh's vertices for the 21 extra points of smplx (nearest vertex to each landmark)."""
    L = {k: v[0] for k, v in lm.items()}
    s = L["head_top"][1] - min(L["left_heel"][1], L["right_heel"][1])
    hc = L["head_centre"]
    targets: dict[str, tuple[np.ndarray, str]] = {
        "nose": (hc + np.array([0.0, -0.012, 0.09]) * s, "torso"),
        "reye": (hc + np.array([-0.02, 0.004, 0.06]) * s, "torso"),
        "leye": (hc + np.array([0.02, 0.004, 0.06]) * s, "torso"),
        "rear": (hc + np.array([-0.05, -0.002, -0.004]) * s, "torso"),
        "lear": (hc + np.array([0.05, -0.002, -0.004]) * s, "torso"),
    }
    for side, short, sign in (("left", "l", 1.0), ("right", "r", -1.0)):
        cap = short.upper()
        toe, heel = L[f"{side}_toe"], L[f"{side}_heel"]
        targets[f"{cap}BigToe"] = (toe + np.array([-sign * 0.012, 0.0, 0.0]) * s, f"{side}_leg")
        targets[f"{cap}SmallToe"] = (toe + np.array([sign * 0.02, 0.0, -0.02]) * s, f"{side}_leg")
        targets[f"{cap}Heel"] = (heel + np.array([0.0, -0.01, 0.0]) * s, f"{side}_leg")
        tip, wrist = L[f"{side}_fingertip"], L[f"{side}_wrist"]
        targets[f"{short}thumb"] = (wrist + np.array([sign * 0.05, 0.0, 0.03]) * s, f"{side}_arm")
        for name, back, dz in (("index", 0.006, 0.016), ("middle", 0.0, 0.0), ("ring", 0.004, -0.014),
                               ("pinky", 0.014, -0.026)):
            targets[f"{short}{name}"] = (tip + np.array([-sign * back, 0.0, dz]) * s, f"{side}_arm")
    ids = {}
    for key, (target, reg) in targets.items():
        cand = np.flatnonzero(region == REGIONS.index(reg))
        ids[key] = int(cand[np.argmin(np.linalg.norm(verts[cand] - target, axis=1))])
    return ids


# ----------------------------------------------------------------------------------------------
# Generation and the cache.


@dataclass(frozen=True)
class StandinModel:
    """A generated body: the SMPL-format dict smplx loads and the vertex ids for its extra points."""

    smpl: dict[str, object]
    vertex_ids: dict[str, int]


def generate(resolution: str = "low", seed: int = 0) -> StandinModel:
    """Generate the stand-in body (deterministic in `resolution` and `seed`)."""
    if resolution not in RESOLUTIONS:
        raise UserError(f"stand-in resolution {resolution!r}: expected one of {', '.join(RESOLUTIONS)}")
    k = RESOLUTIONS[resolution]
    rng = np.random.default_rng(seed)
    cov = _param_covariance()
    z = rng.multivariate_normal(np.zeros(len(PARAMS)), cov, size=POPULATION)
    z = np.clip(z, -3 * PARAM_STD, 3 * PARAM_STD)
    factors = np.concatenate([np.ones((1, len(PARAMS))), 1.0 + z], axis=0)  # row 0: the mean body
    # Few, large tensor operations, on one thread: element-wise work gains little from a second thread,
    # and on a shared, oversubscribed CPU torch's thread pool makes it about ten times slower.
    chunk = -(-len(factors) // k**2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parts = [_make_bodies(factors[i:i + chunk], k) for i in
                 progress(range(0, len(factors), chunk), desc=f"stand-in body ({resolution})", unit="chunk")]
    finally:
        torch.set_num_threads(threads)
    faces, region = parts[0].faces, parts[0].region
    if any(not np.array_equal(p.faces, faces) for p in parts):
        raise RuntimeError("stand-in generator: topology differs between bodies")
    verts = np.concatenate([p.vertices for p in parts])
    joints = np.concatenate([p.joints for p in parts])
    lm0 = {n: v[:1] for n, v in parts[0].landmarks.items()}
    template = verts[0]
    # principal components of the population around the mean body, scaled to unit variance
    dev = (verts[1:] - template).reshape(POPULATION, -1)
    _, sv, vt = np.linalg.svd(dev, full_matrices=False)
    comps = vt[:NUM_SHAPE_COMPONENTS] * (sv[:NUM_SHAPE_COMPONENTS, None] / math.sqrt(POPULATION))
    comps *= np.sign(comps @ template.reshape(-1))[:, None]  # positive = the body grows
    V = template.shape[0]
    shapedirs = comps.reshape(NUM_SHAPE_COMPONENTS, V, 3).transpose(1, 2, 0)
    j_reg = _joint_regressor(verts, joints, support=24 * k * k)
    weights = _skinning_weights(template, region, lm0)
    kintree = np.array([[p if p >= 0 else 4294967295 for p in SMPL_PARENTS], list(range(NUM_JOINTS))], dtype=np.int64)
    smpl = {
        "v_template": template,
        "shapedirs": shapedirs,
        "posedirs": np.zeros((V, 3, 9 * (NUM_JOINTS - 1))),
        "J_regressor": j_reg,
        "weights": weights,
        "kintree_table": kintree,
        "f": faces.astype(np.uint32),
        "J": j_reg @ template,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    return StandinModel(smpl, _vertex_ids(template, region, lm0))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename (safe when several processes generate at once)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def standin_paths(out_dir: str | Path) -> tuple[Path, Path, Path]:
    """(model pickle, vertex ids json, metadata json) of a stand-in folder."""
    d = Path(out_dir) / "smpl"
    return d / "SMPL_NEUTRAL.pkl", d / "vertex_ids.json", d / "standin.json"


def ensure_standin(out_dir: str | Path, resolution: str = "low", seed: int = 0, force: bool = False) -> Path:
    """Generate the stand-in into `out_dir` unless it is already there with these settings; → `out_dir`."""
    pkl, ids_path, meta_path = standin_paths(out_dir)
    meta = {"generator": GENERATOR_VERSION, "resolution": resolution, "seed": seed}
    if not force and pkl.is_file() and ids_path.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return Path(out_dir)
        except (OSError, ValueError):
            pass
    try:
        pkl.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"body.standin_dir '{out_dir}': cannot create it ({exc.strerror})") from None
    log.info("generating the stand-in body (%s, seed %d) in %s", resolution, seed, pkl.parent)
    model = generate(resolution, seed)
    _write_atomic(ids_path, json.dumps(model.vertex_ids, indent=1).encode())
    _write_atomic(pkl, pickle.dumps(model.smpl, protocol=4))
    _write_atomic(meta_path, json.dumps(meta).encode())
    return Path(out_dir)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reid3dsl.body.standin", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder; the model goes to OUT/smpl/SMPL_NEUTRAL.pkl")
    parser.add_argument("--resolution", choices=sorted(RESOLUTIONS), default="low")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    args = parser.parse_args(argv)
    setup_logging()
    out = ensure_standin(args.out, args.resolution, args.seed, force=args.force)
    pkl = standin_paths(out)[0]
    with open(pkl, "rb") as fh:
        data = pickle.load(fh)
    print(f"{pkl}: {data['v_template'].shape[0]} vertices, {data['f'].shape[0]} faces, "
          f"{data['shapedirs'].shape[-1]} shape components")


if __name__ == "__main__":
    main()
