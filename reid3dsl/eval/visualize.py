"""The ranked-results picture: each query beside its top-k gallery images, bordered green where the
identity is right and red where it is wrong, with junk (as the protocol defines it) left out, so the
picture shows the ranking the metrics score. Written as a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reid3dsl.errors import UserError
from reid3dsl.eval.metrics import ArrayLike, Mode, good_among_same_pid, label_array

CORRECT = (0, 170, 0)  # RGB
WRONG = (220, 0, 0)
QUERY = (60, 60, 60)
BACKGROUND = (255, 255, 255)
PAD = 4  # border thickness, also the space between cells
GAP = 12  # extra space between the query and its results


def ranked_results_png(
    query_images: Sequence[np.ndarray],
    gallery_images: Sequence[np.ndarray],
    ranking: torch.Tensor | np.ndarray,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    out_path: str | Path,
    topk: int = 10,
    q_clothes: ArrayLike | None = None,
    g_clothes: ArrayLike | None = None,
    mode: Mode = "standard",
    cell: tuple[int, int] = (128, 64),
) -> Path:
    """Draw one row per query: the query, then its `topk` best gallery images left to right.

    query_images: `(Q,)` uint8 images, HWC RGB (or HW grey); gallery_images: `(G,)` of the same kind, read
    only at the indices shown (a lazy sequence works). ranking: distances `(Q, G)` (float; ranked by a
    stable sort) or gallery indices `(Q, K)` best first (integer). Gallery items of the query's pid that the
    protocol `mode` calls junk are skipped. Every image is resized to `cell` = (height, width).
    Returns the path written.
    """
    import cv2  # only here: the rest of eval does not need OpenCV

    out = Path(out_path)
    if out.suffix.lower() != ".png":
        raise UserError(f"ranked-results picture '{out}': expected a path ending in .png")
    order = ranking.detach().cpu().numpy() if isinstance(ranking, torch.Tensor) else np.asarray(ranking)
    num_q = len(query_images)
    if order.ndim != 2 or order.shape[0] != num_q:
        raise UserError(f"ranking: expected a (Q, G) or (Q, K) array with Q = {num_q} rows, got shape {order.shape}")
    if order.dtype.kind == "f":
        order = np.argsort(order, axis=1, kind="stable")
    elif order.dtype.kind not in "iu":
        raise UserError(f"ranking: expected float distances or integer gallery indices, got dtype {order.dtype}")
    qp, gp = label_array(q_pids, "q_pids"), label_array(g_pids, "g_pids")
    qc, gc = label_array(q_camids, "q_camids"), label_array(g_camids, "g_camids")
    qcl = gcl = None
    if mode != "standard":
        if q_clothes is None or g_clothes is None:
            raise UserError(f"mode '{mode}': expected q_clothes and g_clothes (clothes labels), got None")
        qcl, gcl = label_array(q_clothes, "q_clothes"), label_array(g_clothes, "g_clothes")

    height, width = cell
    pad, gap = PAD, GAP
    canvas = np.full(
        (num_q * (height + 2 * pad) + (num_q + 1) * pad, (topk + 1) * (width + 2 * pad) + gap + (topk + 2) * pad, 3),
        BACKGROUND,
        dtype=np.uint8,
    )
    for i in range(num_q):
        y = pad + i * (height + 3 * pad)
        _paste(canvas, _cell(query_images[i], f"query_images[{i}]", cell, cv2), y, pad, QUERY, pad)
        same_pid = gp[order[i]] == qp[i]
        same_clothes = None if qcl is None or gcl is None else gcl[order[i]] == qcl[i]
        junk = same_pid & ~good_among_same_pid(gc[order[i]] == qc[i], same_clothes, mode)
        shown = order[i][~junk][:topk]
        for r, j in enumerate(shown):
            x = pad + (width + 3 * pad) * (r + 1) + gap
            colour = CORRECT if gp[j] == qp[i] else WRONG
            _paste(canvas, _cell(gallery_images[int(j)], f"gallery_images[{int(j)}]", cell, cv2), y, x, colour, pad)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), canvas[..., ::-1]):  # OpenCV writes BGR
        raise UserError(f"ranked-results picture '{out}': could not be written")
    return out


def _cell(image: Any, name: str, cell: tuple[int, int], cv2: Any) -> np.ndarray:
    """One image as uint8 RGB `(h, w, 3)` of the cell's size."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        raise UserError(f"{name}: expected a uint8 HxWx3 (or HxW) image, got dtype {img.dtype} shape {img.shape}")
    if img.ndim == 2 or img.shape[2] == 1:
        img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
    return cv2.resize(img, (cell[1], cell[0]), interpolation=cv2.INTER_AREA)


def _paste(canvas: np.ndarray, img: np.ndarray, y: int, x: int, colour: tuple[int, int, int], pad: int) -> None:
    """Put `img` at (y + pad, x + pad) inside a `pad`-wide border of `colour`."""
    h, w = img.shape[:2]
    canvas[y : y + h + 2 * pad, x : x + w + 2 * pad] = colour
    canvas[y + pad : y + pad + h, x + pad : x + pad + w] = img
