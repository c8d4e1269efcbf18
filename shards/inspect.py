"""`shards inspect PATH_OR_URL [--grid out.png]`: read a data set's shards back and report what is in them.

Counts per split (samples, identities, cameras, clothes, samples with masks and with keypoints) come from
reading every sample, not from index.json; samples that cannot be read are counted as skipped, next to
the images the build already skipped. `--grid` draws a PNG: one row per identity, its crops in different
outfits/cameras, each with the silhouette outline and the keypoint skeleton drawn over it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from reid3dsl import MAX_IMAGE_SIDE
from reid3dsl.body.draw import draw_outline, draw_skeleton
from reid3dsl.config import StorageConfig
from reid3dsl.data.index import load_index
from reid3dsl.data.reader import SkipCounter, iter_samples
from reid3dsl.data.schema import Sample
from reid3dsl.errors import UserError
from reid3dsl.log import progress

log = logging.getLogger(__name__)
TILE_SCALE = 2
CAPTION_H = 16


@dataclass
class SplitReport:
    samples: int = 0
    identities: set[int] = field(default_factory=set)
    cameras: set[int] = field(default_factory=set)
    clothes: set[str] = field(default_factory=set)
    with_mask: int = 0
    with_keypoints: int = 0
    skipped: int = 0


def draw_sample(sample: Sample, scale: int = TILE_SCALE) -> np.ndarray:
    """A crop with its mask outline and keypoint skeleton drawn over it, plus a caption strip (split initial,
    pid, camera, clothes):
    (H*scale + CAPTION_H, W*scale, 3) uint8 RGB."""
    h, w = sample.image.shape[:2]
    tile = cv2.resize(sample.image, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST).copy()
    if sample.mask is not None:
        draw_outline(tile, sample.mask)
    draw_skeleton(tile, sample.keypoints, scale=scale)
    caption = np.full((CAPTION_H, tile.shape[1], 3), 255, np.uint8)
    m = sample.meta
    text = f"{m.split[0]}:{m.pid} c{m.camid} {m.clothes or '-'}"
    cv2.putText(caption, text, (2, CAPTION_H - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([tile, caption], axis=0)


def save_grid(rows: list[list[Sample]], path: Path) -> None:
    """One row per identity → a PNG at `path` (tiles padded to the largest)."""
    tiles = [[draw_sample(s) for s in row] for row in rows]
    th = max(t.shape[0] for row in tiles for t in row)
    tw = max(t.shape[1] for row in tiles for t in row)
    cols = max(len(row) for row in tiles)
    gap = 4
    canvas = np.full((len(rows) * (th + gap) + gap, cols * (tw + gap) + gap, 3), 40, np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            y, x = gap + r * (th + gap), gap + c * (tw + gap)
            canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        raise UserError(f"--grid '{path}': could not write a PNG there")


class _GridPicker:
    """Keeps crops of the first `ids` identities, preferring new outfits, then new cameras."""

    def __init__(self, ids: int, per_id: int) -> None:
        self.ids, self.per_id = ids, per_id
        self.rows: dict[tuple[str, int], list[Sample]] = {}

    def offer(self, sample: Sample) -> None:
        key = (sample.meta.split, sample.meta.pid)
        if key not in self.rows:
            if len(self.rows) >= self.ids:
                return
            self.rows[key] = []
        row = self.rows[key]
        seen = {(s.meta.clothes, s.meta.camid) for s in row}
        outfits = {s.meta.clothes for s in row}
        new_look = sample.meta.clothes not in outfits or (sample.meta.clothes, sample.meta.camid) not in seen
        if len(row) < self.per_id and (new_look or len(row) < 2):
            row.append(sample)


def inspect(
    url: str,
    storage: StorageConfig,
    grid: Path | None = None,
    grid_ids: int = 8,
    grid_per_id: int = 6,
    max_side: int = MAX_IMAGE_SIDE,
) -> dict[str, Any]:
    """Read every sample under `url` → report dict (per split: counts; totals: skipped); optionally a grid PNG.
    Images and masks with a side over `max_side` (data.max_image_side) are skipped unread."""
    index = load_index(url, storage)
    reports: dict[str, SplitReport] = {}
    picker = _GridPicker(grid_ids, grid_per_id)
    # Spread the picture over splits: a few identities from each.
    per_split_ids = max(1, grid_ids // len(index.splits))
    for name, split in index.splits.items():
        counter = SkipCounter()
        rep = reports[name] = SplitReport()
        split_picker = _GridPicker(per_split_ids, grid_per_id)
        samples = iter_samples(split.shards, storage, counter, max_side=max_side)
        for s in progress(samples, f"inspect {name}", total=split.count, unit="img"):
            rep.samples += 1
            rep.identities.add(s.meta.pid)
            rep.cameras.add(s.meta.camid)
            if s.meta.clothes is not None:
                rep.clothes.add(s.meta.clothes)
            rep.with_mask += s.mask is not None
            rep.with_keypoints += bool((s.keypoints[:, 2] > 0).any())
            if grid is not None:
                split_picker.offer(s)
        rep.skipped = counter.total
        picker.rows.update(split_picker.rows)
    if grid is not None:
        rows = [row for row in picker.rows.values() if row]
        if not rows:
            raise UserError(f"--grid: no readable samples in '{url}' to draw")
        save_grid(rows, grid)
    return {
        "root": url,
        "dataset": index.dataset,
        "splits": reports,
        "build_skipped": index.skipped,
        "build_skipped_examples": list(index.skipped_examples),
        "read_skipped": sum(r.skipped for r in reports.values()),
        "index_counts": {n: s.count for n, s in index.splits.items()},
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a small table."""
    lines = [f"{report['dataset']} at {report['root']}"]
    lines.append(
        f"{'split':8} {'samples':>8} {'ids':>6} {'cams':>5} {'clothes':>8} {'masks':>7} {'kps':>7} {'skipped':>8}"
    )
    for name, r in report["splits"].items():
        lines.append(
            f"{name:8} {r.samples:8d} {len(r.identities):6d} {len(r.cameras):5d} {len(r.clothes):8d} "
            f"{r.with_mask:7d} {r.with_keypoints:7d} {r.skipped:8d}"
        )
        if r.samples + r.skipped != report["index_counts"][name]:
            lines.append(f"  note: index.json lists {report['index_counts'][name]} samples for {name}")
    lines.append(f"skipped while reading: {report['read_skipped']}; skipped by the build: {report['build_skipped']}")
    lines.extend(f"  {example}" for example in report["build_skipped_examples"])
    return "\n".join(lines)
