"""The implicit body, batched over S bodies: the skeleton's landmarks and the anatomical primitives laid on it
(ellipsoids and round cones) for measurement factors (S, P), their smooth-union signed distance, and casting
rays from the skeleton to its surface (`cast`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reid3dsl.body.standin.population import PARAMS


def landmarks(f: torch.Tensor) -> dict[str, torch.Tensor]:
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
class Prim:
    """A primitive: an ellipsoid (a = centre, r = radii (S, 3)) or a round cone (a, b, r1, r2)."""

    kind: str
    a: torch.Tensor
    b: torch.Tensor | None = None
    r: torch.Tensor | None = None
    r1: torch.Tensor | None = None
    r2: torch.Tensor | None = None


def primitives(lm: dict[str, torch.Tensor], f: torch.Tensor) -> dict[str, Prim]:
    """The implicit body's primitives for bodies with landmarks `lm` and factors `f` (S, P)."""
    p = {name: f[:, i] for i, name in enumerate(PARAMS)}
    s = 1.70 * p["stature"]
    g = p["girth"]
    gs = g.sqrt()
    lim = p["limbs"] * gs
    trunk = (lm["neck"][:, 1] - lm["left_hip"][:, 1]) / 0.32  # as in landmarks

    def vec(*xyz: torch.Tensor | float) -> torch.Tensor:
        return torch.stack(torch.broadcast_tensors(*(s * 0 + c for c in xyz)), dim=-1)

    def ell(centre: torch.Tensor, rx: torch.Tensor, ry: torch.Tensor, rz: torch.Tensor) -> Prim:
        return Prim("ellipsoid", centre, r=vec(rx, ry, rz))

    def cone(a: torch.Tensor, b: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor) -> Prim:
        return Prim("cone", a, b, r1=r1, r2=r2)

    pr: dict[str, Prim] = {}
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
TORSO_PRIMS = ("pelvis", "belly", "chest", "shoulders", "neck", "skull", "jaw", "nose", "left_upper_arm",
                "right_upper_arm", "left_thigh", "right_thigh")
REGION_PRIMS = {
    "torso": TORSO_PRIMS,
    **{f"{s}_leg": (f"{s}_thigh", f"{s}_shin", f"{s}_calf", f"{s}_foot") for s in ("left", "right")},
    **{f"{s}_arm": (f"{s}_upper_arm", f"{s}_forearm", f"{s}_hand") for s in ("left", "right")},
}
SMOOTH = 0.02  # smooth-union radius as a fraction of stature


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


def _sdf(q: torch.Tensor, prims: list[Prim], k: torch.Tensor) -> torch.Tensor:
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


def cast(origins: torch.Tensor, dirs: torch.Tensor, t_max: torch.Tensor, prims: list[Prim], k: torch.Tensor,
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



# The landmark at each of SMPL's 24 joints, in joint order.
JOINT_LANDMARKS = ("pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
                   "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
                   "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                   "left_hand", "right_hand")
