"""The counting kernel of `reid3dsl.eval.metrics.evaluate`: for every query, the rank among kept gallery items of
each of its good matches, from `(chunk, G)` blocks of distances, without a per-query loop or a full argsort.

The rank of a good item among kept items is 1 + (good items before it) + (negatives before it). Per block of
queries, a few rows at a time are copied, sorted by value only (numpy's SIMD sort on CPU, threads splitting
the block; an argsort, which must carry indices, is ~30x slower in torch) and binary-searched while still in
cache, counting all items below each good item's distance; the few same-pid items (good and junk) are
subtracted exactly from a small per-query table (`SamePid`). Exact ties between a good item and a negative are
resolved by gallery index from the unsorted row, only where they occur. Memory: cache-sized sort buffers per
thread. Inputs are validated tensors (`metrics` checks what users pass); which same-pid items are good is the
protocol's rule, given by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from reid3dsl.errors import UserError

# Which gallery items sharing the query's pid are good matches, from same-camera and same-clothes masks
# (`same_clothes` is None without clothes labels); the rest of them are junk.
GoodRule = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


class SamePid:
    """For each query, the gallery items of its pid: the only items whose kind (good / junk) depends on the
    query. Labels are int64 tensors on the distances' device: pids and camids `(Q,)` / `(G,)`, clothes codes
    (or None) likewise. Gallery indices of one pid are kept in ascending order."""

    def __init__(
        self,
        q_pids: torch.Tensor,
        g_pids: torch.Tensor,
        q_cam: torch.Tensor,
        g_cam: torch.Tensor,
        q_clothes: torch.Tensor | None,
        g_clothes: torch.Tensor | None,
        good_rule: GoodRule,
    ) -> None:
        self.q_cam, self.g_cam = q_cam, g_cam
        self.q_clothes, self.g_clothes = q_clothes, g_clothes
        self.good_rule = good_rule
        self.g_order = torch.sort(g_pids, stable=True).indices
        sorted_pids = g_pids[self.g_order]
        self.lo = torch.searchsorted(sorted_pids, q_pids, side="left")
        self.count = torch.searchsorted(sorted_pids, q_pids, side="right") - self.lo

    def __call__(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
        good = real & self.good_rule(same_cam, same_clothes)
        return idx, real, good


def good_ranks(
    blocks: Iterable[tuple[int, torch.Tensor]], same_pid: SamePid
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """For each `(start, block)` — distances `(C, G)` of queries [start, start + C) — the ranks `(C, P)`
    int64, 1-based, among kept items of every good match (ascending along each row for its first n_good
    entries: the good items in stable (distance, gallery index) order; entries past n_good are meaningless),
    and n_good `(C,)`."""
    threads = max(1, torch.get_num_threads())
    with ThreadPoolExecutor(max_workers=threads) as pool:
        counter = _RowCounter(pool, threads)
        for start, block in blocks:
            yield _good_ranks(block, counter, same_pid, start, start + block.shape[0])


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
    block: torch.Tensor, counter: _RowCounter, same_pid: SamePid, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`good_ranks` of one block `(C, G)`: queries [start, stop)."""
    idx, real, good = same_pid(start, stop)
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
