"""Rigging the template: skinning weights (inverse distance to the bones each region may follow), the joint
regressor fitted over the population, and the mesh's vertices for smplx's 21 extra points."""

from __future__ import annotations

import numpy as np

from reid3dsl.body.constants import JOINT, NUM_JOINTS
from reid3dsl.body.standin.mesh import REGIONS


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


def skinning_weights(verts: np.ndarray, region: np.ndarray, lm: dict[str, np.ndarray],
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


def joint_regressor(verts: np.ndarray, joints: np.ndarray, support: int, ridge: float = 1e-3) -> np.ndarray:
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


def vertex_ids(verts: np.ndarray, region: np.ndarray, lm: dict[str, np.ndarray]) -> dict[str, int]:
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
