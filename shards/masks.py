"""Silhouette masks for person crops: OpenCV GrabCut initialised from the crop layout (and from the
keypoints where there are any), or binary masks read from a folder of parsing/segmentation outputs.

GrabCut's seeds: the outer columns of a pedestrian crop are background, the central band is probably the
person, the rest is probably background; a confident skeleton (COCO-17 limbs drawn thick) is certainly
the person. The largest connected foreground region is kept.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from reid3dsl.body.constants import COCO17_SKELETON

SEED_CONFIDENCE = 0.3
SIDE_MARGIN = 0.06
CORE_WIDTH = 0.25
MIN_REGION = 0.01


def grabcut_mask(image: np.ndarray, keypoints: np.ndarray | None = None, iterations: int = 5) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB crop [+ (17, 3) keypoints] → (H, W) uint8 mask (255 person), or None if GrabCut
    finds no person."""
    h, w = image.shape[:2]
    seeds = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    side = max(1, round(SIDE_MARGIN * w))
    seeds[:, :side] = cv2.GC_BGD
    seeds[:, w - side :] = cv2.GC_BGD
    # A pedestrian detector centres the person: a tall central band is probably foreground.
    x0, x1 = round(w * (0.5 - CORE_WIDTH)), round(w * (0.5 + CORE_WIDTH))
    seeds[round(0.05 * h) : round(0.95 * h), x0:x1] = cv2.GC_PR_FGD
    if keypoints is not None:
        thickness = max(2, round(0.06 * w))
        for a, b in COCO17_SKELETON:
            if keypoints[a, 2] >= SEED_CONFIDENCE and keypoints[b, 2] >= SEED_CONFIDENCE:
                pa = (int(round(keypoints[a, 0])), int(round(keypoints[a, 1])))
                pb = (int(round(keypoints[b, 0])), int(round(keypoints[b, 1])))
                cv2.line(seeds, pa, pb, int(cv2.GC_FGD), thickness)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    try:
        cv2.grabCut(bgr, seeds, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    fg = ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    # Clothing can split the person into pieces (a dark belt, trousers close to the background): keep
    # every substantial region, drop specks.
    keep = 1 + np.flatnonzero(areas >= MIN_REGION * h * w)
    if keep.size == 0:
        return None
    return np.where(np.isin(labels, keep), 255, 0).astype(np.uint8)


def mask_from_folder(folder: Path, rel: str, size: tuple[int, int]) -> np.ndarray | None:
    """The mask of image `rel` from a folder mirroring the data set (`<rel stem>.png`, else `<rel>`):
    any non-zero label is the person (parsing outputs label body parts). Resized to `size` (H, W) if needed.
    None when there is no readable mask file."""
    stem = rel.rsplit(".", 1)[0]
    for candidate in (folder / f"{stem}.png", folder / rel):
        if candidate.is_file():
            mask = cv2.imread(str(candidate), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                return None
            if mask.shape != size:
                mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
            return np.where(mask > 0, 255, 0).astype(np.uint8)
    return None
