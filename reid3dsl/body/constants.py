"""Constants of the body: SMPL's joints and tree, COCO-17, the SMPL→COCO mapping, flips, body parts.

The one place for names and index tables; every other module imports them from here.
Coordinates of the body model: y up, x towards the subject's left, z forward (SMPL's convention).
Camera coordinates (camera.py): x right, y down, z forward (OpenCV), so an upright person facing
the camera has the global orientation `UPRIGHT_FACING_CAMERA` (a half turn about x).
"""

from __future__ import annotations

SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)
NUM_JOINTS = len(SMPL_JOINT_NAMES)
JOINT = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}

# Parent of each joint in SMPL's kinematic tree (-1: the root).
SMPL_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

COCO17_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)
# Keypoint i of a horizontally flipped image is keypoint COCO17_FLIP_PERM[i] of the original.
COCO17_FLIP_PERM: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
# Limbs for drawing skeletons (pairs of COCO-17 indices).
COCO17_SKELETON: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12),
    (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)

# smplx's SMPL returns 24 joints followed by 21 points read from vertices; the first five are
# nose, right eye, left eye, right ear, left ear (smplx.vertex_joint_selector order).
SMPLX_EXTRA_JOINT_KEYS: tuple[str, ...] = (
    "nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe",
    "RHeel", "lthumb", "lindex", "lmiddle", "lring", "lpinky", "rthumb", "rindex", "rmiddle", "rring",
    "rpinky",
)
# COCO-17 from smplx's 45 joints: the face points from the vertex-based selector (indices 24-28),
# the rest from SMPL joints (shoulders 16/17, elbows 18/19, wrists 20/21, hips 1/2, knees 4/5,
# ankles 7/8).
COCO17_FROM_SMPLX: tuple[int, ...] = (24, 26, 25, 28, 27, 16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8)

# Body parts for multi-granularity shape features: for each supported number of parts, the part
# names and the SMPL joints whose skinned vertices form each part (a vertex belongs to the part of
# its most weighted joint).
_HEAD = ("neck", "head")
_TORSO = ("pelvis", "spine1", "spine2", "spine3", "left_collar", "right_collar")
_L_ARM = ("left_shoulder", "left_elbow", "left_wrist", "left_hand")
_R_ARM = ("right_shoulder", "right_elbow", "right_wrist", "right_hand")
_L_LEG = ("left_hip", "left_knee", "left_ankle", "left_foot")
_R_LEG = ("right_hip", "right_knee", "right_ankle", "right_foot")
BODY_PARTS: dict[int, tuple[tuple[str, tuple[str, ...]], ...]] = {
    1: (("body", SMPL_JOINT_NAMES),),
    2: (("upper", _HEAD + _TORSO + _L_ARM + _R_ARM), ("lower", _L_LEG + _R_LEG)),
    3: (("head", _HEAD), ("upper", _TORSO + _L_ARM + _R_ARM), ("lower", _L_LEG + _R_LEG)),
    4: (("head", _HEAD), ("torso", _TORSO), ("arms", _L_ARM + _R_ARM), ("legs", _L_LEG + _R_LEG)),
    6: (
        ("head", _HEAD), ("torso", _TORSO), ("left_arm", _L_ARM), ("right_arm", _R_ARM),
        ("left_leg", _L_LEG), ("right_leg", _R_LEG),
    ),
    10: (
        ("head", _HEAD), ("torso", _TORSO),
        ("left_upper_arm", _L_ARM[:1]), ("left_forearm", _L_ARM[1:]),
        ("right_upper_arm", _R_ARM[:1]), ("right_forearm", _R_ARM[1:]),
        ("left_thigh", _L_LEG[:1]), ("left_lower_leg", _L_LEG[1:]),
        ("right_thigh", _R_LEG[:1]), ("right_lower_leg", _R_LEG[1:]),
    ),
}

# Global orientation (rotation matrix) of an upright person facing the camera: SMPL's y-up,
# z-forward body turned into the camera's y-down, z-away frame.
UPRIGHT_FACING_CAMERA: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))
