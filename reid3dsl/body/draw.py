"""Drawing the body over images (OpenCV, uint8 RGB): keypoint skeletons, mask outlines, mesh wireframes,
and the evaluation's reconstruction picture (image, true mask, rendered silhouette, mesh overlay; IoU on each)."""

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


def draw_mesh(tile: np.ndarray, vertices_px: np.ndarray, faces: np.ndarray, scale: float = 1.0,
              color: tuple[int, int, int] = PRED_COLOR, alpha: float = 0.6) -> None:
    """Draw the wireframe of a mesh projected to pixels (vertices_px (V, 2), faces (F, 3)) in place, blended."""
    lines = tile.copy()
    pts = np.round(vertices_px * scale).astype(np.int32)
    cv2.polylines(lines, list(pts[faces]), True, color, 1, cv2.LINE_AA)
    tile[:] = cv2.addWeighted(lines, alpha, tile, 1 - alpha, 0)


def _label(tile: np.ndarray, text: str) -> None:
    h, w = tile.shape[:2]
    size = max(0.3, w / 330)  # "render IoU 0.00" fits the tile's width
    cv2.putText(tile, text, (3, h - 5), cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, (3, h - 5), cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), 1, cv2.LINE_AA)


def _gray(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    gray = cv2.resize((np.clip(mask.astype(np.float32), 0, 1) * 255).astype(np.uint8), size,
                      interpolation=cv2.INTER_NEAREST)
    return np.repeat(gray[..., None], 3, axis=2)


def reconstruction_grid(images: torch.Tensor, masks: torch.Tensor, silhouettes: torch.Tensor,
                        vertices_px: torch.Tensor, faces: torch.Tensor, pred_keypoints: torch.Tensor,
                        target_keypoints: torch.Tensor, ious: torch.Tensor, out: Path, scale: int = 2) -> Path:
    """One row per image, four tiles each: the image with the true keypoints (by side) and the predicted ones
    (red); the true mask; the rendered silhouette; the predicted mesh's wireframe over the image — each tile
    labelled with the image's silhouette IoU.

    images (B, 3, H, W) float in [0, 1]; masks (B, h, w) and silhouettes (B, h, w) in [0, 1] (any size);
    vertices_px (B, V, 2) and pred_keypoints (B, 17, 2), target_keypoints (B, 17, 3) in pixels of the images;
    faces (F, 3); ious (B,) → PNG at `out`."""
    rows = []
    faces_np = faces.cpu().numpy()
    for i in range(images.shape[0]):
        img = (images[i].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        h, w = img.shape[:2]
        size = (w * scale, h * scale)
        base = cv2.resize(img, size, interpolation=cv2.INTER_NEAREST)
        keypoints = base.copy()
        draw_skeleton(keypoints, target_keypoints[i].cpu().numpy(), scale)
        pred = np.concatenate([pred_keypoints[i].cpu().numpy(), np.ones((17, 1))], axis=1)
        draw_skeleton(keypoints, pred, scale, color=PRED_COLOR, radius=1)
        mesh = base.copy()
        draw_mesh(mesh, vertices_px[i].cpu().numpy(), faces_np, scale)
        tiles = [keypoints, _gray(masks[i].cpu().numpy(), size), _gray(silhouettes[i].cpu().numpy(), size), mesh]
        for tile, name in zip(tiles, ("image", "mask", "render", "mesh"), strict=True):
            _label(tile, f"{name} IoU {float(ious[i]):.2f}")
        rows.append(tiles)
    gap = 4
    th, tw = rows[0][0].shape[:2]
    canvas = np.full((len(rows) * (th + gap) + gap, 4 * (tw + gap) + gap, 3), 40, np.uint8)
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            y, x = gap + r * (th + gap), gap + c * (tw + gap)
            canvas[y : y + th, x : x + tw] = tile
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        raise UserError(f"picture '{out}': could not be written")
    return out
