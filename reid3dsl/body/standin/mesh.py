"""The tube-topology mesh: a torso tube closed by the head, two arm tubes grafted onto holes in the torso's
sides and two leg tubes hung from the crotch, every vertex ray-cast onto the implicit body, so one topology
fits every body of the population (`make_bodies`). Each vertex belongs to one of `REGIONS`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from reid3dsl.body.standin.population import PARAMS
from reid3dsl.body.standin.sdf import (
    JOINT_LANDMARKS,
    REGION_PRIMS,
    SMOOTH,
    TORSO_PRIMS,
    Prim,
    cast,
    landmarks,
    primitives,
)

REGIONS = ("torso", "left_leg", "right_leg", "left_arm", "right_arm")


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

    def __init__(self, lm: dict[str, torch.Tensor], prims: dict[str, Prim], stature: torch.Tensor, k: int) -> None:
        self.lm, self.prims, self.k = lm, prims, k
        self.s = stature
        self.smooth = SMOOTH * stature
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
        pts = cast(origins, dirs, t_max, [self.prims[n] for n in REGION_PRIMS[region]], self.smooth)
        ids = self._add(pts, region)
        out, at = [], 0
        for r in rings:
            out.append(ids[at:at + r.phi.shape[1]])
            at += r.phi.shape[1]
        return out

    def _cast_pole(self, origin: torch.Tensor, direction: torch.Tensor, t_max: torch.Tensor, region: str) -> int:
        pts = cast(origin[:, None], direction[:, None], t_max[:, None],
                    [self.prims[n] for n in REGION_PRIMS[region]], self.smooth)
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
        bridge_pts = cast(lm["crotch_top"][:, None].expand(-1, m, -1), bridge_dirs, (0.12 * s)[:, None].expand(-1, m),
                           [self.prims[n] for n in TORSO_PRIMS], self.smooth)
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
class Bodies:
    """Meshes of one topology for a batch of S bodies, with their joints and landmarks."""

    vertices: np.ndarray  # (S, V, 3)
    joints: np.ndarray  # (S, 24, 3)
    landmarks: dict[str, np.ndarray]  # name → (S, 3)
    faces: np.ndarray  # (F, 3)
    region: np.ndarray  # (V,)


def make_bodies(factors: np.ndarray, k: int) -> Bodies:
    """Meshes (unreferenced vertices dropped) for bodies with measurement factors (S, P)."""
    f = torch.as_tensor(factors, dtype=torch.float32)
    lm = landmarks(f)
    b = _Builder(lm, primitives(lm, f), 1.70 * f[:, PARAMS.index("stature")], k)
    b.build()
    verts = torch.cat(b.verts, dim=1)
    faces = np.asarray(b.faces, dtype=np.int64)
    used = np.unique(faces)
    remap = np.full(verts.shape[1], -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    joints = torch.stack([lm[name] for name in JOINT_LANDMARKS], dim=1)
    # float32 for the ray casting (half the memory traffic), float64 for everything fitted from it
    return Bodies(verts[:, used].double().numpy(), joints.double().numpy(),
                   {n: v.double().numpy() for n, v in lm.items()}, remap[faces], np.asarray(b.region)[used])

