"""ReID metrics: CMC, mAP and mINP under the standard, cloth-changing (cc) and same-clothes (sc) protocols,
plus PRCC's single-shot protocol — exact, vectorised over chunks of queries, bounded in memory.

Semantics (the Market-1501 evaluation; `reid3dsl.eval.reference` is the per-query definition): the gallery
is ranked by a stable sort of distances (gallery index order breaks ties); gallery items of the query's pid
are good or junk by the protocol's rule, junk is removed, items of other pids stay as negatives; queries
without a good item are skipped (`num_valid` counts the rest). CMC is clipped at 1, AP averaged over valid
queries, mINP = mean of (number of good items) / (rank of the last one).

How it avoids a per-query loop and a full argsort: the rank of a good item among kept items is
1 + (good items before it) + (negatives before it). Per chunk of queries, a few rows at a time are copied,
sorted by value only (numpy's SIMD sort on CPU, threads splitting the chunk; an argsort, which must carry
indices, is ~30x slower in torch) and binary-searched while still in cache, counting all items below each
good item's distance; the few same-pid items (good and junk) are subtracted exactly from a small per-query
table. Exact ties between a good item and a negative are resolved by gallery index from the unsorted row,
only where they occur. Memory: cache-sized sort buffers per thread, plus one `(chunk, G)` distance block
when the input is `Features` (the distance matrix then never exists whole).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from reid3dsl.errors import UserError
from reid3dsl.log import progress

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
) -> dict[str, Any]:
    """CMC, mAP, mINP of a ranking problem.

    distmat: distances `(Q, G)` (numpy or torch, any float dtype, any device), or `Features` (distances
    computed per chunk). Labels: `(Q,)` / `(G,)` ints (pids, camids) and, for cc/sc, clothes labels of any
    hashable kind (e.g. "12_2"). `chunk_size` queries are processed at a time: it bounds memory to a few
    `(chunk_size, G)` buffers and does not change the result.
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
    labels = _Labels(q_pids, g_pids, q_camids, g_camids, q_clothes, g_clothes, num_q, num_g, mode, source.device)

    # Per-query values, summed once at the end: the result does not depend on the chunking, to the bit.
    first_ranks: list[torch.Tensor] = []
    aps: list[torch.Tensor] = []
    inps: list[torch.Tensor] = []
    threads = max(1, torch.get_num_threads())
    with ThreadPoolExecutor(max_workers=threads) as pool:
        blocks = source.blocks(chunk_size) if num_g else iter(())  # an empty gallery: no query is valid
        counter = _RowCounter(pool, threads)
        total = -(-num_q // chunk_size)
        for start, block in progress(blocks, desc="evaluate", total=total, unit="chunk"):
            ranks, n_good = _good_ranks(block, counter, labels, start, start + block.shape[0])
            valid = n_good > 0
            ranks, n_good = ranks[valid], n_good[valid]
            position = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
            in_row = position[None, :] <= n_good[:, None]
            precision = torch.where(in_row, position[None, :] / ranks.to(torch.float64), 0.0)
            aps.append((precision.sum(dim=1) / n_good).cpu())
            last = ranks.gather(1, (n_good - 1).clamp_min(0)[:, None]).squeeze(1)
            inps.append((n_good.to(torch.float64) / last).cpu())
            first_ranks.append(ranks[:, 0].cpu())
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
) -> dict[str, Any]:
    """PRCC's single-shot protocol: each draw keeps one random gallery image per identity and runs
    `evaluate` on that gallery; returns the mean over `draws` seeded draws (same keys as `evaluate`;
    `num_valid` is the mean per draw, rounded). Same arguments as `evaluate` plus `draws` and `seed`."""
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


class _Labels:
    """Validated labels, plus for each query the gallery items of its pid: the only items whose kind
    (good / junk) depends on the query. Gallery indices of one pid are kept in ascending order."""

    def __init__(
        self,
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
    ) -> None:
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
        self.mode = mode
        self.q_cam, self.g_cam = arrays["q_camids"], arrays["g_camids"]
        self.q_clothes = self.g_clothes = None
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
            self.q_clothes, self.g_clothes = codes[:num_q], codes[num_q:]
        g_pid = arrays["g_pids"]
        self.g_order = torch.sort(g_pid, stable=True).indices
        sorted_pids = g_pid[self.g_order]
        self.lo = torch.searchsorted(sorted_pids, arrays["q_pids"], side="left")
        self.count = torch.searchsorted(sorted_pids, arrays["q_pids"], side="right") - self.lo

    def same_pid(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For queries [start, stop): gallery indices `(C, P)` of items with the query's pid (padded with 0),
        a mask `(C, P)` of real entries, and which of them are good matches `(C, P)`."""
        lo, count = self.lo[start:stop], self.count[start:stop]
        width = max(int(count.max()), 1) if count.numel() else 1
        offset = torch.arange(width, device=lo.device)
        real = offset[None, :] < count[:, None]
        pos = torch.where(real, lo[:, None] + offset[None, :], 0).clamp_max(max(self.g_order.numel() - 1, 0))
        idx = torch.where(real, self.g_order[pos], 0)
        same_cam = self.g_cam[idx] == self.q_cam[start:stop, None]
        same_clothes = None
        if self.q_clothes is not None and self.g_clothes is not None:
            same_clothes = self.g_clothes[idx] == self.q_clothes[start:stop, None]
        good = real & good_among_same_pid(same_cam, same_clothes, self.mode)
        return idx, real, good


# Rows are sorted and searched in groups of about this many bytes, so the binary searches run on rows that
# are still in the core's cache (about 20x faster than searching a whole sorted chunk afterwards).
_GROUP_BYTES = 1 << 19
# Blocks smaller than this (elements) stay on the calling thread: handing them out costs more than it saves.
_MIN_PARALLEL = 1 << 20


class _RowCounter:
    """Counts, for each row of a `(C, G)` distance block and each (value, gallery index) of that row in
    `values`, `index` `(C, P)`, the items of the row that a stable sort puts before it.

    On CPU: each thread copies a few rows at a time, sorts them with numpy's SIMD sort (values only, in place;
    numpy releases the GIL) and binary-searches them while they are hot; ties are resolved on the same hot
    rows. No `(C, G)` sorted copy exists. Elsewhere: torch.sort of the block on its device, then the same.
    """

    def __init__(self, pool: ThreadPoolExecutor, threads: int) -> None:
        self.pool, self.threads = pool, threads

    def __call__(
        self,
        block: torch.Tensor,
        values: torch.Tensor,
        index: torch.Tensor,
        equal: torch.Tensor,
        want: torch.Tensor,
        start: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """block `(C, G)`; values, index, equal (items known to equal each value, at least 1), want `(C, P)`;
        `start`: the first row's query index. Returns, all `(C, P)`: below (items with a smaller value),
        tied (want, and more items equal the value than `equal`), tied_before (where tied: items equal to the
        value with a smaller gallery index; 0 elsewhere)."""
        if block.device.type != "cpu":
            return _count(torch.sort(block, dim=1).values, block, values, index, equal, want, start)
        rows, cols = block.shape
        src = block.numpy()
        below = torch.empty(values.shape, dtype=torch.int64)
        tied = torch.empty(values.shape, dtype=torch.bool)
        tied_before = torch.empty(values.shape, dtype=torch.int64)
        group = max(2, _GROUP_BYTES // max(1, cols * src.itemsize))
        share = rows if block.numel() < _MIN_PARALLEL else -(-rows // self.threads)

        def work(first: int) -> None:
            buf = np.empty((min(group, rows), cols), dtype=src.dtype)
            for a in range(first, min(first + share, rows), group):
                b = min(a + group, first + share, rows)
                hot = buf[: b - a]
                hot[...] = src[a:b]
                hot.sort(axis=1)
                below[a:b], tied[a:b], tied_before[a:b] = _count(
                    torch.from_numpy(hot), block[a:b], values[a:b], index[a:b], equal[a:b], want[a:b], start + a
                )

        list(self.pool.map(work, range(0, rows, share)))
        return below, tied, tied_before


def _count(
    sorted_rows: torch.Tensor,
    rows: torch.Tensor,
    values: torch.Tensor,
    index: torch.Tensor,
    equal: torch.Tensor,
    want: torch.Tensor,
    start: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_RowCounter` on rows `(c, G)` and the same rows sorted ascending. Whether more than `equal` items equal
    a value takes one look past the known equal ones, not a second search; only such ties scan the row."""
    last = sorted_rows[:, -1]
    if bool(torch.isnan(last).any()):  # NaN sorts last
        row = start + int(torch.isnan(last).nonzero()[0])
        raise UserError(f"distances: expected no NaN, found one in query row {row}")
    width = sorted_rows.shape[1]
    below = torch.searchsorted(sorted_rows, values, side="left")
    after = below + equal
    tied = want & (after < width) & (sorted_rows.gather(1, after.clamp_max(width - 1)) == values)
    tied_before = torch.zeros_like(below)
    if bool(tied.any()):
        r, c = tied.nonzero(as_tuple=True)
        col = torch.arange(width, device=rows.device)
        piece = max(1, rows.shape[0])  # ties scanned this many at a time: memory within the rows' own size
        for a in range(0, r.numel(), piece):
            rr, cc = r[a : a + piece], c[a : a + piece]
            hits = (rows[rr] == values[rr, cc, None]) & (col[None, :] < index[rr, cc, None])
            tied_before[rr, cc] = hits.sum(dim=1)
    return below, tied, tied_before


def _good_ranks(
    block: torch.Tensor, counter: _RowCounter, labels: _Labels, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks among kept items of every good match of queries [start, stop).

    block `(C, G)` distances. Returns ranks `(C, P)` int64, 1-based, ascending along each row for its first
    n_good entries (the good items in stable (distance, index) order; entries past n_good are meaningless),
    and n_good `(C,)`.
    """
    idx, real, good = labels.same_pid(start, stop)
    dist = block.gather(1, idx)
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
    # Goods first, each group in (distance, gallery index) order: idx ascends along the row, sorts are stable.
    by_dist = torch.sort(dist, dim=1, stable=True).indices
    order = by_dist.gather(1, torch.sort((~good).gather(1, by_dist).to(torch.uint8), dim=1, stable=True).indices)
    good_d = dist.gather(1, order).contiguous()
    good_i = idx.gather(1, order)
    n_good = good.sum(dim=1)
    in_row = torch.arange(good_d.shape[1], device=good_d.device)[None, :] < n_good[:, None]

    # The query's own-pid items (good and junk) below / at each good distance: they are not negatives.
    same_sorted = torch.sort(torch.where(real, dist, inf), dim=1).values
    same_below = torch.searchsorted(same_sorted, good_d, side="left")
    same_equal = torch.searchsorted(same_sorted, good_d, side="right") - same_below
    same_equal -= (~real).sum(dim=1, keepdim=True) * (good_d == inf)  # padding is +inf
    # Items of any kind before each good item; where a negative ties with it, also the tied ones before it.
    below, tied, tied_before = counter(block, good_d, good_i, same_equal, in_row, start)
    neg_before = below - same_below
    if bool(tied.any()):
        r, c = tied.nonzero(as_tuple=True)
        same_tied_before = ((dist[r] == good_d[r, c, None]) & real[r] & (idx[r] < good_i[r, c, None])).sum(dim=1)
        neg_before[r, c] += tied_before[r, c] - same_tied_before
    ranks = neg_before + torch.arange(1, good_d.shape[1] + 1, device=good_d.device)[None, :]
    return ranks, n_good
