"""Drawing the body over images (OpenCV, uint8 RGB): keypoint skeletons, mask outlines, silhouette tints,
and the training job's overlay grid of the 3D stream's silhouettes and keypoints against the targets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from reid3dsl.body.constants import COCO17_NAMES, COCO17_SKELETON
from reid3dsl.errors import UserError

LEFT_COLOR = (255, 140, 0)  # RGB: subject's left side orange, right side cyan, centre yellow
RIGHT_COLOR = (0, 200, 255)
MID_COLOR = (255, 255, 0)
MASK_COLOR = (255, 0, 255)
PRED_COLOR = (255, 40, 40)


def side_color(i: int) -> tuple[int, int, int]:
    """The colour of COCO-17 keypoint `i` by body side."""
    name = COCO17_NAMES[i]
    return LEFT_COLOR if name.startswith("left") else RIGHT_COLOR if name.startswith("right") else MID_COLOR


def draw_skeleton(tile: np.ndarray, keypoints: np.ndarray, scale: float = 1.0,
                  color: tuple[int, int, int] | None = None, radius: int = 2) -> None:
    """Draw COCO-17 keypoints (17, 3) = (x, y, confidence) in place; points with confidence 0 are left out.
    `color` None colours by body side."""
    pts = [(int(round(x * scale)), int(round(y * scale))) for x, y in keypoints[:, :2]]
    for a, b in COCO17_SKELETON:
        if keypoints[a, 2] > 0 and keypoints[b, 2] > 0:
            cv2.line(tile, pts[a], pts[b], color or side_color(b), 1, cv2.LINE_AA)
    for i, p in enumerate(pts):
        if keypoints[i, 2] > 0:
            cv2.circle(tile, p, radius, color or side_color(i), -1, cv2.LINE_AA)


def draw_outline(tile: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = MASK_COLOR) -> None:
    """Draw the outline of a mask (any size; resized to the tile) in place."""
    h, w = tile.shape[:2]
    resized = cv2.resize((mask > 0.5 * mask.max() if mask.dtype != np.uint8 else mask > 0).astype(np.uint8),
                         (w, h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(resized, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(tile, contours, -1, color, 1)


def overlay_grid(images: torch.Tensor, silhouettes: torch.Tensor | None, pred_keypoints: torch.Tensor,
                 target_keypoints: torch.Tensor, target_masks: torch.Tensor, out: Path, scale: int = 2) -> Path:
    """One tile per image: the predicted soft silhouette tinted red, the target mask outlined in magenta,
    target keypoints coloured by side and predicted keypoints in red.

    images (B, 3, H, W) float in [0, 1]; silhouettes (B, H, W) in [0, 1] or None; pred_keypoints (B, 17, 2)
    and target_keypoints (B, 17, 3) in pixels of the images; target_masks (B, h, w) any size → PNG at `out`."""
    tiles = []
    for i in range(images.shape[0]):
        img = (images[i].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        h, w = img.shape[:2]
        tile = cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        if silhouettes is not None:
            sil = cv2.resize(silhouettes[i].detach().float().cpu().numpy(), (w * scale, h * scale))[..., None]
            tile = (tile * (1 - 0.5 * sil) + np.array(PRED_COLOR) * 0.5 * sil).round().astype(np.uint8)
        draw_outline(tile, target_masks[i].cpu().numpy())
        draw_skeleton(tile, target_keypoints[i].cpu().numpy(), scale)
        pred = np.concatenate([pred_keypoints[i].cpu().numpy(), np.ones((17, 1))], axis=1)
        draw_skeleton(tile, pred, scale, color=PRED_COLOR, radius=1)
        tiles.append(tile)
    gap = 4
    th, tw = tiles[0].shape[:2]
    canvas = np.full((th + 2 * gap, len(tiles) * (tw + gap) + gap, 3), 40, np.uint8)
    for c, tile in enumerate(tiles):
        canvas[gap : gap + th, gap + c * (tw + gap) : gap + c * (tw + gap) + tw] = tile
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        raise UserError(f"picture '{out}': could not be written")
    return out
