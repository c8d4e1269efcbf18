"""COCO-17 keypoints for person crops: imported from a keypoint results JSON, or detected with torchvision's
Keypoint R-CNN from a local weights file. Images without a detection get confidence 0 — never invented.

Accepted JSON (matched to the data set's images by relative path, else by unique file name):
- a results list, the AlphaPose/COCO-results style: `[{"image_id": "bounding_box_train/0002_c1s1_000451_03.jpg",
  "keypoints": [x1, y1, c1, ... x17, y17, c17], "score": 0.93}, ...]`; confidences are taken as given;
- a COCO annotation file: `{"images": [{"id", "file_name"}], "annotations": [{"image_id", "keypoints"}]}`;
  visibility flags v > 0 become confidence 1.
Several people in one image: the highest-scoring one.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from reid3dsl.data.schema import NUM_KEYPOINTS, missing_keypoints
from reid3dsl.errors import UserError

log = logging.getLogger(__name__)


def _entries(doc: Any, path: Path) -> tuple[list[tuple[str, list[float], float]], bool]:
    """(image name, 51 values, score) per detection, and whether values are COCO visibility flags."""
    if isinstance(doc, dict) and "annotations" in doc:
        try:
            names = {img["id"]: str(img["file_name"]) for img in doc["images"]}
            rows = [
                (names[a["image_id"]], a["keypoints"], float(a.get("score", a.get("num_keypoints", 0))))
                for a in doc["annotations"]
            ]
        except (KeyError, TypeError) as err:
            raise UserError(
                f"keypoints file '{path}': expected COCO images (id, file_name) and annotations (image_id, "
                f"keypoints) ({err!r})"
            ) from None
        return rows, True
    if isinstance(doc, list):
        rows = []
        for i, det in enumerate(doc):
            if not isinstance(det, dict) or "image_id" not in det or "keypoints" not in det:
                raise UserError(f"keypoints file '{path}' entry {i}: expected an object with image_id and keypoints")
            rows.append((str(det["image_id"]), det["keypoints"], float(det.get("score", 0.0))))
        return rows, False
    raise UserError(
        f"keypoints file '{path}': expected a COCO keypoint results list or a COCO annotation object with 'annotations'"
    )


def _as_array(values: Any, flags: bool, where: str) -> np.ndarray:
    try:
        arr = np.asarray(values, np.float32).reshape(NUM_KEYPOINTS, 3)
    except (ValueError, TypeError):
        raise UserError(f"{where}: keypoints: expected {NUM_KEYPOINTS * 3} numbers (x, y, confidence) x 17") from None
    if not np.isfinite(arr).all():
        raise UserError(f"{where}: keypoints: expected finite numbers")
    arr[:, 2] = (arr[:, 2] > 0).astype(np.float32) if flags else np.clip(arr[:, 2], 0.0, 1.0)
    arr[arr[:, 2] == 0, :2] = 0.0
    return arr


def _normalise(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).as_posix().removeprefix("./")


def load_keypoints(path: Path, rels: Iterable[str]) -> dict[str, np.ndarray]:
    """Keypoints from a COCO-style JSON for the images `rels` (relative paths) → rel → (17, 3) float32.
    Images the file does not mention are absent from the result (the caller stores confidence 0)."""
    if not path.is_file():
        raise UserError(f"--keypoints '{path}': not found (expected a COCO-format keypoint JSON, or 'detect')")
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"keypoints file '{path}': not valid JSON") from None
    rows, flags = _entries(doc, path)
    best: dict[str, tuple[float, np.ndarray]] = {}
    for i, (name, values, score) in enumerate(rows):
        arr = _as_array(values, flags, f"keypoints file '{path}' entry {i} ({name})")
        rank = score if score > 0 else float(arr[:, 2].mean())
        key = _normalise(name)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, arr)
    by_basename: dict[str, list[str]] = defaultdict(list)
    for name in best:
        by_basename[PurePosixPath(name).name].append(name)
    rels = list(rels)
    rel_names: dict[str, int] = defaultdict(int)
    for rel in rels:
        rel_names[PurePosixPath(rel).name] += 1
    out: dict[str, np.ndarray] = {}
    for rel in rels:
        if rel in best:
            out[rel] = best[rel][1]
            continue
        # Tools often write the path they were given (absolute, another root, or the bare file name):
        # match the tail, or a file name that is unique on both sides.
        name = PurePosixPath(rel).name
        named = by_basename.get(name, [])
        candidates = [n for n in named if n.endswith("/" + rel)]
        if not candidates and len(named) == 1 and rel_names[name] == 1:
            candidates = named
        if len(candidates) == 1:
            out[rel] = best[candidates[0]][1]
    log.info("keypoints from %s: %d of the images matched, the rest stored with confidence 0", path, len(out))
    return out


class KeypointDetector:
    """torchvision Keypoint R-CNN (ResNet-50 FPN, COCO-17) loaded from a local state dict; nothing is
    downloaded. Call on a (H, W, 3) uint8 RGB crop → (17, 3) float32 keypoints of the best person."""

    def __init__(self, weights: Path, min_score: float = 0.5) -> None:
        import torch
        from torchvision.models.detection import keypointrcnn_resnet50_fpn

        if not Path(weights).is_file():
            raise UserError(
                f"--detector-weights '{weights}': not found (expected a local keypointrcnn_resnet50_fpn state dict "
                "file; nothing is downloaded)"
            )
        # A pedestrian crop is one person filling the frame: 800 px tall is plenty (torchvision's default
        # scales a 128 x 64 crop to 1333 px) and a few proposals and detections are enough (0.5 s a crop
        # on 2 CPU cores instead of 4 s).
        model = keypointrcnn_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            min_size=400,
            max_size=800,
            box_detections_per_img=5,
            rpn_pre_nms_top_n_test=200,
            rpn_post_nms_top_n_test=100,
        )
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("model"), dict):
                state = state["model"]
            model.load_state_dict(state)
        except Exception as err:
            raise UserError(
                f"--detector-weights '{weights}': not a keypointrcnn_resnet50_fpn state dict ({type(err).__name__})"
            ) from None
        self.model = model.eval()
        self.min_score = min_score

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import torch

        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)
        with torch.inference_mode():
            out = self.model([tensor])[0]
        people = (out["labels"] == 1) & (out["scores"] >= self.min_score)
        if not people.any():
            return missing_keypoints()
        best = int(torch.nonzero(people)[out["scores"][people].argmax()])
        kp = out["keypoints"][best].numpy().astype(np.float32)
        # keypoints_scores are heatmap logits: a sigmoid turns them into a confidence in (0, 1).
        conf = torch.sigmoid(out["keypoints_scores"][best]).numpy().astype(np.float32)
        kp[:, 2] = conf
        return kp
