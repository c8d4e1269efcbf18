"""Painting clothes on the body: the garment region of every mesh vertex (skin, hair, top, bottom, shoes,
forearm, lower leg) and the per-vertex colours of a person wearing an outfit, patterns included."""

from __future__ import annotations

import math

import numpy as np

from reid3dsl.body.constants import JOINT
from reid3dsl.data.synth.design import Identity, Outfit

# Skin/garment regions of the mesh (from the body model's 10 parts, split further in the rest pose).
SKIN, HAIR, TOP, BOTTOM, SHOES, FOREARM, LOWER_LEG = range(7)


def regions(rest: np.ndarray, joints: np.ndarray, keypoints: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    """Region of each vertex (SKIN, HAIR, TOP, ...) from the 10 body parts and the rest pose (T-pose):
    rest (V, 3), joints (24, 3), keypoints (17, 3) → (V,) int."""
    head, torso, lua, lfa, rua, rfa, lth, lll, rth, rll = parts
    region = np.full(len(rest), SKIN)
    y, z = rest[:, 1], rest[:, 2]
    waist = 0.5 * (joints[JOINT["pelvis"], 1] + joints[JOINT["spine1"], 1])
    region[torso] = np.where(y[torso] < waist, BOTTOM, TOP)
    region[np.concatenate([lua, rua])] = TOP
    for fore, wrist in ((lfa, JOINT["left_wrist"]), (rfa, JOINT["right_wrist"])):
        hand = np.abs(rest[fore, 0]) > abs(joints[wrist, 0]) - 0.02
        region[fore] = np.where(hand, SKIN, FOREARM)
    region[np.concatenate([lth, rth])] = BOTTOM
    for lower, ankle in ((lll, JOINT["left_ankle"]), (rll, JOINT["right_ankle"])):
        region[lower] = np.where(y[lower] < joints[ankle, 1] + 0.04, SHOES, LOWER_LEG)
    eyes = keypoints[1:3, 1].mean()
    head_centre_z = rest[head, 2].mean()
    hair = (y[head] > eyes + 0.025) | ((z[head] < head_centre_z - 0.01) & (y[head] > keypoints[3:5, 1].mean() - 0.06))
    region[head] = np.where(hair, HAIR, SKIN)
    return region


def _pattern(kind: str, rest: np.ndarray, arm: np.ndarray, period: float) -> np.ndarray:
    """Second-colour weight in [0, 1] of each vertex for a pattern (rings run around the body and limbs)."""
    axial = np.where(arm, np.abs(rest[:, 0]), rest[:, 1])  # along the limb (arms lie along x in the T-pose)
    around = np.where(arm, np.arctan2(rest[:, 1] - 0.54, rest[:, 2]), np.arctan2(rest[:, 0], rest[:, 2]))
    ring = np.sin(2 * math.pi * axial / period) > 0
    column = np.sin(6 * around) > 0
    if kind == "hstripes":
        return ring.astype(np.float64)
    if kind == "vstripes":
        return column.astype(np.float64)
    if kind == "checks":
        return (ring ^ column).astype(np.float64)
    if kind == "block":  # a yoke: shoulders and sleeves in the second colour
        return ((rest[:, 1] > 0.42) | arm).astype(np.float64)
    return np.zeros(len(rest))


def vertex_colours(person: Identity, outfit: Outfit, region: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Per-vertex RGB (V, 3) in [0, 1] of `person` wearing `outfit`."""
    arm = np.abs(rest[:, 0]) > 0.2
    colours = np.tile(np.array(person.skin), (len(rest), 1))
    colours[region == HAIR] = person.hair
    top_mix = _pattern(outfit.top_pattern, rest, arm, outfit.period)[:, None]
    top = (1 - top_mix) * np.array(outfit.top) + top_mix * np.array(outfit.top2)
    bottom_mix = _pattern(outfit.bottom_pattern, rest, arm, outfit.period * 1.5)[:, None]
    bottom = (1 - bottom_mix) * np.array(outfit.bottom) + bottom_mix * np.array(outfit.bottom2)
    is_top = (region == TOP) | ((region == FOREARM) & outfit.long_sleeves)
    is_bottom = (region == BOTTOM) | ((region == LOWER_LEG) & outfit.long_legs)
    colours[is_top] = top[is_top]
    colours[is_bottom] = bottom[is_bottom]
    colours[region == SHOES] = outfit.shoes
    return colours
