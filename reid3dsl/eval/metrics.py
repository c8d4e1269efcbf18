"""ReID metrics: CMC, mAP and mINP under the standard, cloth-changing (cc) and same-clothes (sc) protocols,
plus PRCC's single-shot protocol — exact, vectorised over chunks of queries, bounded in memory.

Semantics (the Market-1501 evaluation; `reid3dsl.eval.reference` is the per-query definition): the gallery
is ranked by a stable sort of distances (gallery index order breaks ties); gallery items of the query's pid
are good or junk by the protocol's rule, junk is removed, items of other pids stay as negatives; queries
without a good item are skipped (`num_valid` counts the rest). CMC is clipped at 1, AP averaged over valid
queries, mINP = mean of (number of good items) / (rank of the last one).

This module is the public API and checks what callers pass; the ranks come from the counting kernel in
`reid3dsl.eval.ranking` (no per-query loop, no full argsort). Memory: the kernel's cache-sized sort buffers,
plus one `(chunk, G)` distance block when the input is `Features` (the distance matrix then never exists
whole). Nothing here reports progress: a caller that wants a bar passes `on_chunk` (e.g. a tqdm's `update`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from reid3dsl.errors import UserError
from reid3dsl.eval.ranking import SamePid, good_ranks

log = logging.getLogger(__name__)

Mode = Literal["standard", "cc", "sc"]
Metric = Literal["cosine", "euclidean"]
MODES: tuple[str, ...] = ("standard", "cc", "sc")
METRICS: tuple[str, ...] = ("cosine", "euclidean")
ArrayLike = torch.Tensor | np.ndarray | Sequence[Any]


def float_tensor(x: Any, name: str) -> torch.Tensor:
    """A floating tensor view of `x` (no copy where possible); half precisions become float32."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiu":
            raise UserError(f"{name}: expected numbers, got dtype {arr.dtype}")
        t = torch.from_numpy(arr if arr.dtype.kind == "f" else arr.astype(np.float32))
    if not t.is_floating_point():
        t = t.float()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()  # exact widening: order and ties are unchanged
    return t


def label_array(x: Any, name: str) -> np.ndarray:
    """Labels as a 1-D numpy array (torch tensors moved to the host)."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 1:
        raise UserError(f"{name}: expected a 1-D array of labels, got shape {arr.shape}")
    return arr


@dataclass(frozen=True)
class Features:
    """Query features `(Q, D)` and gallery features `(G, D)` given to `evaluate` instead of a distance
    matrix: distances are computed one chunk of queries at a time and never held whole."""

    query: torch.Tensor | np.ndarray
    gallery: torch.Tensor | np.ndarray
    metric: Metric = "cosine"


class GalleryDistances:
    """Distances from chunks of query features to a fixed gallery `(G, D)`, with the gallery's norms computed
    once. cosine: 1 - cos(q, g); euclidean: ||q - g||_2. Computed in float32 (float64 if an input is)."""

    def __init__(self, gallery: torch.Tensor | np.ndarray, metric: Metric = "cosine") -> None:
        if metric not in METRICS:
            raise UserError(f"metric '{metric}': expected one of {', '.join(METRICS)}")
        g = float_tensor(gallery, "gallery features")
        if g.ndim != 2:
            raise UserError(f"gallery features: expected a (G, D) matrix, got shape {tuple(g.shape)}")
        self.metric = metric
        self.gallery = g
        if metric == "cosine":
            # Scale after the product instead of normalising a copy of the gallery: saves G x D memory.
            self.scale = g.norm(dim=1).clamp_min(1e-12).reciprocal()
        else:
            self.scale = g.square().sum(dim=1)

    def __call__(self, query: torch.Tensor | np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
        """Distances `(C, G)` from query features `(C, D)`; written into `out` `(C, G)` when given."""
        q = self._query(query)
        g = self.gallery.to(q.dtype)
        if out is None:
            out = torch.empty(q.shape[0], g.shape[0], dtype=q.dtype, device=g.device)
        if self.metric == "cosine":
            torch.mm(q / q.norm(dim=1, keepdim=True).clamp_min(1e-12), g.T, out=out)
            return out.mul_(-self.scale.to(q.dtype)).add_(1.0)
        torch.addmm(self.scale.to(q.dtype)[None, :], q, g.T, alpha=-2.0, out=out)
        return out.add_(q.square().sum(dim=1, keepdim=True)).clamp_min_(0.0).sqrt_()

    def _query(self, query: torch.Tensor | np.ndarray) -> torch.Tensor:
        q = float_tensor(query, "query features")
        if q.ndim != 2 or q.shape[1] != self.gallery.shape[1]:
            raise UserError(
                f"query features: expected a (Q, {self.gallery.shape[1]}) matrix like the gallery's, "
                f"got shape {tuple(q.shape)}"
            )
        if q.device != self.gallery.device:
            raise UserError(f"query features on {q.device}, gallery on {self.gallery.device}: expected one device")
        return q.to(torch.promote_types(q.dtype, self.gallery.dtype))


def pairwise_distances(
    query: torch.Tensor | np.ndarray, gallery: torch.Tensor | np.ndarray, metric: Metric = "cosine"
) -> torch.Tensor:
    """The full distance matrix `(Q, G)` between query `(Q, D)` and gallery `(G, D)` features."""
    return GalleryDistances(gallery, metric)(query)


def good_among_same_pid(same_cam: Any, same_clothes: Any, mode: str) -> Any:
    """For gallery items that share the query's pid: which are good matches (the rest are junk).

    Elementwise on numpy or torch bool arrays of any shape. standard: other camera. cc: other camera and
    other clothes. sc: other camera and same clothes. `same_clothes` is ignored (may be None) in standard.
    """
    if mode == "standard":
        return ~same_cam
    if mode == "cc":
        return ~same_cam & ~same_clothes
    if mode == "sc":
        return ~same_cam & same_clothes
    raise UserError(f"mode '{mode}': expected one of {', '.join(MODES)}")


def evaluate(
    distmat: torch.Tensor | np.ndarray | Features,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    q_clothes: ArrayLike | None = None,
    g_clothes: ArrayLike | None = None,
    mode: Mode = "standard",
    max_rank: int = 50,
    chunk_size: int = 512,
    on_chunk: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """CMC, mAP, mINP of a ranking problem.

    distmat: distances `(Q, G)` (numpy or torch, any float dtype, any device), or `Features` (distances
    computed per chunk). Labels: `(Q,)` / `(G,)` ints (pids, camids) and, for cc/sc, clothes labels of any
    hashable kind (e.g. "12_2"). `chunk_size` queries are processed at a time: it bounds memory to a few
    `(chunk_size, G)` buffers and does not change the result. `on_chunk`, if given, is called after each
    chunk with the number of queries it held (Q in all).
    Returns {"cmc": np.ndarray (max_rank,), "mAP": float, "mINP": float, "num_valid": int}.
    """
    if mode not in MODES:
        raise UserError(f"mode '{mode}': expected one of {', '.join(MODES)}")
    if not isinstance(max_rank, int) or max_rank < 1:
        raise UserError(f"max_rank = {max_rank!r}: expected an integer >= 1")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise UserError(f"chunk_size = {chunk_size!r}: expected an integer >= 1")
    source = _DistanceSource(distmat)
    num_q, num_g = source.shape
    same_pid = _same_pid(q_pids, g_pids, q_camids, g_camids, q_clothes, g_clothes, num_q, num_g, mode, source.device)

    # Per-query values, summed once at the end: the result does not depend on the chunking, to the bit.
    first_ranks: list[torch.Tensor] = []
    aps: list[torch.Tensor] = []
    inps: list[torch.Tensor] = []
    blocks = source.blocks(chunk_size) if num_g else iter(())  # an empty gallery: no query is valid
    for ranks, n_good in good_ranks(blocks, same_pid):
        chunk_queries = n_good.shape[0]
        valid = n_good > 0
        ranks, n_good = ranks[valid], n_good[valid]
        position = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
        in_row = position[None, :] <= n_good[:, None]
        precision = torch.where(in_row, position[None, :] / ranks.to(torch.float64), 0.0)
        aps.append((precision.sum(dim=1) / n_good).cpu())
        last = ranks.gather(1, (n_good - 1).clamp_min(0)[:, None]).squeeze(1)
        inps.append((n_good.to(torch.float64) / last).cpu())
        first_ranks.append(ranks[:, 0].cpu())
        if on_chunk is not None:
            on_chunk(chunk_queries)
    num_valid = int(sum(len(f) for f in first_ranks))
    if num_valid == 0:
        log.warning("evaluate (%s): no query has a valid match in the gallery; all metrics are 0", mode)
        return {"cmc": np.zeros(max_rank), "mAP": 0.0, "mINP": 0.0, "num_valid": 0}
    first = torch.cat(first_ranks).clamp_max(max_rank + 1) - 1
    hist = torch.bincount(first, minlength=max_rank + 1)[:max_rank]
    return {
        "cmc": (hist.cumsum(0).to(torch.float64) / num_valid).numpy(),
        "mAP": float(torch.cat(aps).sum()) / num_valid,
        "mINP": float(torch.cat(inps).sum()) / num_valid,
        "num_valid": num_valid,
    }


def prcc(
    distmat: torch.Tensor | np.ndarray | Features,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    q_clothes: ArrayLike | None = None,
    g_clothes: ArrayLike | None = None,
    mode: Mode = "standard",
    max_rank: int = 50,
    chunk_size: int = 512,
    draws: int = 10,
    seed: int = 0,
    on_chunk: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """PRCC's single-shot protocol: each draw keeps one random gallery image per identity and runs
    `evaluate` on that gallery; returns the mean over `draws` seeded draws (same keys as `evaluate`;
    `num_valid` is the mean per draw, rounded). Same arguments as `evaluate` plus `draws` and `seed`;
    `on_chunk` sees every draw's chunks (draws x Q queries in all)."""
    if not isinstance(draws, int) or draws < 1:
        raise UserError(f"draws = {draws!r}: expected an integer >= 1")
    g_pid_arr = label_array(g_pids, "g_pids")
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(draws):
        perm = rng.permutation(g_pid_arr.shape[0])
        _, first = np.unique(g_pid_arr[perm], return_index=True)
        keep = np.sort(perm[first])  # gallery order kept, so ties still break by original index
        if isinstance(distmat, Features):
            gallery = distmat.gallery
            sub: Any = Features(distmat.query, gallery[_index_for(gallery, keep)], distmat.metric)
        else:
            sub = distmat[:, _index_for(distmat, keep)]
        results.append(
            evaluate(
                sub,
                q_pids,
                g_pid_arr[keep],
                q_camids,
                label_array(g_camids, "g_camids")[keep],
                q_clothes,
                None if g_clothes is None else label_array(g_clothes, "g_clothes")[keep],
                mode=mode,
                max_rank=max_rank,
                chunk_size=chunk_size,
                on_chunk=on_chunk,
            )
        )
    return {
        "cmc": np.mean([r["cmc"] for r in results], axis=0),
        "mAP": float(np.mean([r["mAP"] for r in results])),
        "mINP": float(np.mean([r["mINP"] for r in results])),
        "num_valid": int(round(float(np.mean([r["num_valid"] for r in results])))),
    }


# ----------------------------------------------------------------------------------------------------------
# Internals


def _index_for(x: Any, keep: np.ndarray) -> Any:
    """`keep` as an index for `x`: a tensor on x's device for torch, the array itself for numpy."""
    return torch.from_numpy(keep).to(x.device) if isinstance(x, torch.Tensor) else keep


class _DistanceSource:
    """A distance matrix or `Features`, served as `(chunk, G)` blocks of consecutive queries."""

    def __init__(self, distmat: Any) -> None:
        self.features: GalleryDistances | None = None
        if isinstance(distmat, Features):
            self.features = GalleryDistances(distmat.gallery, distmat.metric)
            self.query = float_tensor(distmat.query, "query features")
            if self.query.ndim != 2:
                raise UserError(f"query features: expected a (Q, D) matrix, got shape {tuple(self.query.shape)}")
            self.shape = (self.query.shape[0], self.features.gallery.shape[0])
            self.device = self.features.gallery.device
        else:
            self.matrix = float_tensor(distmat, "distmat")
            if self.matrix.ndim != 2:
                raise UserError(f"distmat: expected a (Q, G) matrix, got shape {tuple(self.matrix.shape)}")
            self.shape = tuple(self.matrix.shape)
            self.device = self.matrix.device

    def blocks(self, chunk_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        num_q = self.shape[0]
        if self.features is None:
            for start in range(0, num_q, chunk_size):
                yield start, self.matrix[start : start + chunk_size]
            return
        buf: torch.Tensor | None = None
        for start in range(0, num_q, chunk_size):
            query = self.query[start : start + chunk_size]
            if buf is None:  # one buffer reused for every chunk: no page faults after the first
                dtype = torch.promote_types(query.dtype, self.features.gallery.dtype)
                buf = torch.empty(query.shape[0], self.shape[1], dtype=dtype, device=self.device)
            yield start, self.features(query, out=buf[: query.shape[0]])


def _same_pid(
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    q_clothes: Any,
    g_clothes: Any,
    num_q: int,
    num_g: int,
    mode: str,
    device: torch.device,
) -> SamePid:
    """Validated labels on `device` → the kernel's per-query table of same-pid gallery items, with the
    protocol's rule of which of them are good."""
    arrays = {}
    for name, value, n, rows in (
        ("q_pids", q_pids, num_q, "distmat rows"),
        ("g_pids", g_pids, num_g, "distmat columns"),
        ("q_camids", q_camids, num_q, "distmat rows"),
        ("g_camids", g_camids, num_g, "distmat columns"),
    ):
        arr = label_array(value, name)
        if arr.shape[0] != n:
            raise UserError(f"{name}: expected {n} labels (one per {rows[:-1]}), got {arr.shape[0]}")
        if arr.dtype.kind not in "iu" and arr.size:
            raise UserError(f"{name}: expected integer labels, got dtype {arr.dtype}")
        arrays[name] = torch.from_numpy(arr.astype(np.int64)).to(device)
    q_codes = g_codes = None
    if mode != "standard":
        if q_clothes is None or g_clothes is None:
            raise UserError(f"mode '{mode}': expected q_clothes and g_clothes (clothes labels), got None")
        qc, gc = label_array(q_clothes, "q_clothes"), label_array(g_clothes, "g_clothes")
        for name, arr, n in (("q_clothes", qc, num_q), ("g_clothes", gc, num_g)):
            if arr.shape[0] != n:
                raise UserError(f"{name}: expected {n} labels, got {arr.shape[0]}")
        # Any hashable labels (strings such as "12_2") become shared integer codes.
        _, codes = np.unique(np.concatenate([qc.astype(object), gc.astype(object)]), return_inverse=True)
        codes = torch.from_numpy(codes.astype(np.int64)).to(device)
        q_codes, g_codes = codes[:num_q], codes[num_q:]
    return SamePid(
        arrays["q_pids"], arrays["g_pids"], arrays["q_camids"], arrays["g_camids"], q_codes, g_codes,
        functools.partial(good_among_same_pid, mode=mode),
    )
