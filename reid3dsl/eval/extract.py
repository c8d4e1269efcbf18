"""Feature extraction over the eval shards, sharded across Ray workers and gathered on rank 0, and the
protocol × feature table of metrics computed from it.

Every rank extracts its share of the query and gallery splits (`reid3dsl.data.pipeline.eval_batches`),
optionally averaging each feature with that of the mirrored inputs (`flip_inputs`); rank 0 gathers them
(single-process runs skip the gather) and evaluates every protocol on every feature variant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reid3dsl.config import Config
from reid3dsl.data.transforms import flip_inputs
from reid3dsl.eval.metrics import Features, evaluate
from reid3dsl.log import progress
from reid3dsl.models.threedsl import ThreeDSL
from reid3dsl.precision import Precision

log = logging.getLogger(__name__)
RANKS = (1, 5, 10)
# eval.split → its (query, gallery) shard splits: test identities, or validation identities for choosing settings.
EVAL_SPLITS = {"test": ("query", "gallery"), "val": ("val_query", "val_gallery")}


@dataclass
class SplitFeatures:
    """Features of one split: variant → (N, D) float32 tensors, with labels (N,) and sample keys."""

    feats: dict[str, torch.Tensor] = field(default_factory=dict)
    pids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    camids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    clothes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    keys: list[str] = field(default_factory=list)
    true_betas: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # NaN rows: unknown

    @staticmethod
    def merge(parts: list[SplitFeatures]) -> SplitFeatures:
        parts = [p for p in parts if p.keys]
        if not parts:
            return SplitFeatures()
        order = np.argsort(np.array(sum((p.keys for p in parts), [])), kind="stable")
        feats = {k: torch.cat([p.feats[k] for p in parts])[torch.from_numpy(order)] for k in parts[0].feats}
        return SplitFeatures(
            feats=feats,
            pids=np.concatenate([p.pids for p in parts])[order],
            camids=np.concatenate([p.camids for p in parts])[order],
            clothes=np.concatenate([p.clothes for p in parts])[order],
            keys=[sum((p.keys for p in parts), [])[i] for i in order],
            true_betas=np.concatenate([p.true_betas for p in parts])[order],
        )


def batch_features(model: ThreeDSL, precision: Precision, image: torch.Tensor, shape_image: torch.Tensor,
                   flip: bool, shape_input: str) -> dict[str, torch.Tensor]:
    """Features of one batch of transformed inputs (`model.extract`: rgb / shape / fused, each (B, D) float32),
    averaged with those of the mirrored inputs when `flip`."""
    with torch.no_grad(), precision.autocast():
        feats = model.extract(image, shape_image)
        if flip:
            flipped = model.extract(*flip_inputs(image, shape_image, shape_input))
            feats = {k: (v + flipped[k]) / 2 for k, v in feats.items()}
    return {k: v.float() for k, v in feats.items()}


def extract_split(model: ThreeDSL, cfg: Config, split: str, rank: int, world_size: int, device: torch.device,
                  precision: Precision, batch_size: int = 64) -> SplitFeatures:
    """This rank's share of `split` → its features (`batch_features`)."""
    from reid3dsl.data.pipeline import eval_batches

    was_training = model.training
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    pids, camids, clothes, keys, true_betas = [], [], [], [], []
    for batch in progress(eval_batches(cfg, split, rank, world_size, batch_size), desc=f"extract {split}",
                          unit="batch"):
        feats = batch_features(model, precision, batch["image"].to(device), batch["shape_image"].to(device),
                               cfg.eval.flip, cfg.data.shape_input)
        for name, value in feats.items():
            chunks.setdefault(name, []).append(value.cpu())
        known = batch["has_betas"].numpy()[:, None]
        true_betas.append(np.where(known, batch["betas"].numpy(), np.nan).astype(np.float32))
        pids.append(batch["pid"].numpy())
        camids.append(batch["camid"].numpy())
        clothes.append(batch["clothes"].numpy())
        keys.extend(batch["key"])
    model.train(was_training)
    if not keys:
        return SplitFeatures()
    return SplitFeatures(
        feats={k: torch.cat(v) for k, v in chunks.items()},
        pids=np.concatenate(pids), camids=np.concatenate(camids), clothes=np.concatenate(clothes), keys=keys,
        true_betas=np.concatenate(true_betas),
    )


def gather_to_rank0(local: SplitFeatures, rank: int, world_size: int) -> SplitFeatures | None:
    """All ranks' features merged (in key order) on rank 0; None on other ranks."""
    import torch.distributed as dist

    if world_size == 1 or not dist.is_initialized():
        return SplitFeatures.merge([local])
    parts: list[SplitFeatures | None] = [None] * world_size if rank == 0 else []
    dist.gather_object(local, parts if rank == 0 else None, dst=0)
    return SplitFeatures.merge([p for p in parts if p is not None]) if rank == 0 else None


def score(cfg: Config, query: SplitFeatures, gallery: SplitFeatures, protocol: str, feature: str) -> dict[str, Any]:
    """One protocol on one feature variant, as `cfg.eval` says (metric, re-ranking, PRCC draws).

    `prcc` is PRCC's single-shot clothes-changing protocol (its same-clothes half is `sc`)."""
    from reid3dsl.eval.metrics import prcc
    from reid3dsl.eval.rerank import rerank

    e = cfg.eval
    has_clothes = _has_clothes(query, gallery)
    q, g = query.feats[feature], gallery.feats[feature]
    source: Any = Features(q, g, metric=e.metric)
    if e.rerank:
        source = rerank(q, g, k1=e.rerank_k1, k2=e.rerank_k2, lambda_value=e.rerank_lambda, metric=e.metric,
                        chunk_size=e.chunk_size)
    args = (source, query.pids, gallery.pids, query.camids, gallery.camids,
            query.clothes if has_clothes else None, gallery.clothes if has_clothes else None)
    max_rank = max(e.max_rank, max(RANKS))
    if protocol == "prcc":
        return prcc(*args, mode="cc", max_rank=max_rank, chunk_size=e.chunk_size, draws=e.prcc_draws,
                    seed=e.prcc_seed)
    return evaluate(*args, mode=protocol, max_rank=max_rank, chunk_size=e.chunk_size)  # type: ignore[arg-type]


def _has_clothes(query: SplitFeatures, gallery: SplitFeatures) -> bool:
    return bool(len(query.keys) and (query.clothes >= 0).all() and (gallery.clothes >= 0).all())


def protocol_table(cfg: Config, query: SplitFeatures, gallery: SplitFeatures) -> dict[str, float]:
    """`eval/<protocol>/<feature>/{rank1,rank5,rank10,mAP,mINP}` for the configured protocols and features.

    CC, SC and PRCC need clothes labels on both sides; they are left out (with a log line) where the data has
    none."""
    has_clothes = _has_clothes(query, gallery)
    out: dict[str, float] = {}
    for protocol in cfg.eval.protocols:
        if protocol != "standard" and not has_clothes:
            log.info("eval: protocol %s needs clothes labels; this data set has none", protocol)
            continue
        for name in cfg.eval.features:
            if name not in query.feats:
                continue
            res = score(cfg, query, gallery, protocol, name)
            prefix = f"eval/{protocol}/{name}"
            for r in RANKS:
                out[f"{prefix}/rank{r}"] = float(res["cmc"][r - 1])
            out[f"{prefix}/mAP"] = float(res["mAP"])
            out[f"{prefix}/mINP"] = float(res["mINP"])
    return out


def read_images(cfg: Config, split: str, keys: set[str]) -> dict[str, np.ndarray]:
    """The stored RGB images of `keys` in `split` (one pass over the split's shards)."""
    from reid3dsl.data.index import load_index
    from reid3dsl.data.reader import read_shard
    from reid3dsl.data.schema import Sample

    found: dict[str, np.ndarray] = {}
    for shard in load_index(cfg.data.root, cfg.storage).split(split).shards:
        for item in read_shard(shard, cfg.storage, cfg.data.max_image_side):
            if isinstance(item, Sample) and item.key in keys:
                found[item.key] = item.image
        if len(found) == len(keys):
            break
    return found


def ranked_picture(cfg: Config, query: SplitFeatures, gallery: SplitFeatures, out: Path,
                   feature: str | None = None, mode: str | None = None) -> Path | None:
    """The ranked-results PNG of `eval.vis_queries` queries spread over the query set (None if there are none).

    Uses `feature` (default: fused, else whatever exists) and `mode` (default: cc where clothes labels exist
    and the config evaluates cc, else standard); only the images shown are read back from the shards."""
    from reid3dsl.eval.metrics import pairwise_distances
    from reid3dsl.eval.visualize import ranked_results_png

    n = min(cfg.eval.vis_queries, len(query.keys))
    feature = feature or next((f for f in ("fused", "rgb", "shape") if f in query.feats), None)
    if n == 0 or feature is None:
        return None
    has_clothes = _has_clothes(query, gallery)
    if mode is None:
        mode = "cc" if has_clothes and {"cc", "prcc"} & set(cfg.eval.protocols) else "standard"
    mode = "cc" if mode == "prcc" else mode
    rows = np.linspace(0, len(query.keys) - 1, n).round().astype(int)
    dist = pairwise_distances(query.feats[feature][rows], gallery.feats[feature], metric=cfg.eval.metric)
    # Read enough gallery items per query that vis_topk remain after junk is removed.
    top = torch.argsort(dist, dim=1, stable=True)[:, :3 * cfg.eval.vis_topk].numpy()
    q_split, g_split = EVAL_SPLITS[cfg.eval.split]
    q_images = read_images(cfg, q_split, {query.keys[i] for i in rows})
    g_images = read_images(cfg, g_split, {gallery.keys[j] for j in top.reshape(-1)})
    blank = np.zeros((cfg.data.height, cfg.data.width, 3), np.uint8)
    return ranked_results_png(
        [q_images.get(query.keys[i], blank) for i in rows], _Lazy(gallery.keys, g_images, blank), top,
        query.pids[rows], gallery.pids, query.camids[rows], gallery.camids, out, topk=cfg.eval.vis_topk,
        q_clothes=query.clothes[rows] if has_clothes else None,
        g_clothes=gallery.clothes if has_clothes else None, mode=mode,  # type: ignore[arg-type]
        cell=(cfg.data.height, cfg.data.width),
    )


class _Lazy:
    """Gallery images by index, from the few that were read (a blank for the rest, which are never shown)."""

    def __init__(self, keys: list[str], images: dict[str, np.ndarray], blank: np.ndarray) -> None:
        self.keys, self.images, self.blank = keys, images, blank

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images.get(self.keys[i], self.blank)
