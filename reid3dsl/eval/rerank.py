"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), computed from features without an all-by-all matrix.

The usual implementation builds the (Q+G) x (Q+G) distance matrix, argsorts it whole and loops over every
image in Python. Here the same quantities come from chunks of rows: pass 1 keeps only each image's k1+1
nearest neighbours and its largest distance (the row normaliser); the k-reciprocal sets and their expansion
are tensor ops on those neighbour lists; pass 2 recomputes each row block to read the weights of the
encoding V, a sparse matrix; query expansion is a sparse product; the Jaccard distance sums min(V_q, V_g)
over shared non-zeros through an inverted index. Memory is O(chunk x (Q+G)) plus the sparse V, and the only
dense output is the (Q, G) result.
Distances follow the original: the metric's distance squared, each row divided by its maximum.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from reid3dsl.errors import UserError
from reid3dsl.eval.metrics import GalleryDistances, Metric, float_tensor
from reid3dsl.log import progress

# Pairs (query non-zero x gallery non-zero) handled at once in the Jaccard step; bounds its memory.
_PAIRS_PER_STEP = 1 << 23


def rerank(
    query: torch.Tensor | np.ndarray,
    gallery: torch.Tensor | np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: Metric = "euclidean",
    chunk_size: int = 512,
) -> torch.Tensor:
    """Re-ranked distances `(Q, G)` float32 from query `(Q, D)` and gallery `(G, D)` features.

    final = (1 - lambda_value) * Jaccard(k-reciprocal encodings) + lambda_value * normalised distance.
    k1: size of the k-reciprocal neighbourhoods (expansion candidates use round(k1 / 2), as the authors'
    code does); k2: neighbours averaged in query expansion (1 = none). `chunk_size` rows are processed at a time.
    """
    q = float_tensor(query, "query features")
    g = float_tensor(gallery, "gallery features")
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise UserError(
            f"rerank features: expected query (Q, D) and gallery (G, D), got {tuple(q.shape)} and {tuple(g.shape)}"
        )
    num_q, num_all = q.shape[0], q.shape[0] + g.shape[0]
    if not 1 <= k1 < num_all:
        raise UserError(f"rerank k1 = {k1}: expected 1 <= k1 < {num_all} (query + gallery images)")
    if not 1 <= k2 <= k1 + 1:
        raise UserError(f"rerank k2 = {k2}: expected 1 <= k2 <= k1 + 1 = {k1 + 1}")
    if not 0.0 <= lambda_value <= 1.0:
        raise UserError(f"rerank lambda_value = {lambda_value}: expected a value in [0, 1]")
    if chunk_size < 1:
        raise UserError(f"rerank chunk_size = {chunk_size}: expected >= 1")
    both = GalleryDistances(torch.cat([q, g.to(q.dtype)]), metric)
    x = both.gallery

    neighbours, row_max = _nearest(both, k1 + 1, chunk_size)
    reciprocal = _is_reciprocal(neighbours, chunk_size)
    half = int(np.around(k1 / 2.0))  # the original's rounding (half to even)
    half_reciprocal = _is_reciprocal(neighbours[:, : half + 1], chunk_size)
    # Sparse tensors built here are checked (O(nnz)); opting in explicitly also keeps torch from warning.
    with torch.sparse.check_sparse_tensor_invariants(enable=True):
        v = _encode(both, neighbours, reciprocal, half_reciprocal, row_max, chunk_size)
        if k2 > 1:
            rows = torch.arange(num_all, device=x.device).repeat_interleave(k2)
            mean = torch.sparse_coo_tensor(
                torch.stack([rows, neighbours[:, :k2].reshape(-1)]),
                torch.full((rows.numel(),), 1.0 / k2, dtype=v.dtype, device=x.device),
                (num_all, num_all),
            )
            with warnings.catch_warnings():  # torch routes this product through its (beta-labelled) CSR kernels
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                v = torch.sparse.mm(mean, v).coalesce()
    return _final(v, num_q, row_max, GalleryDistances(g, metric), q, lambda_value, chunk_size)


def _nearest(dist: GalleryDistances, k: int, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass 1 over all rows: indices `(N, k)` of each image's k nearest (itself first) by squared distance,
    and each row's largest squared distance `(N,)`."""
    x = dist.gallery
    n = x.shape[0]
    neighbours = torch.empty(n, k, dtype=torch.int64, device=x.device)
    row_max = torch.empty(n, dtype=x.dtype, device=x.device)
    buf = torch.empty(min(chunk_size, n), n, dtype=x.dtype, device=x.device)  # reused: no page faults per chunk
    for a in progress(range(0, n, chunk_size), desc="rerank: neighbours", unit="chunk"):
        rows = x[a : a + chunk_size]
        d = dist(rows, out=buf[: rows.shape[0]]).square_()
        row_max[a : a + chunk_size] = d.max(dim=1).values
        neighbours[a : a + chunk_size] = torch.topk(d, k, dim=1, largest=False, sorted=True).indices
    return neighbours, row_max


def _is_reciprocal(neighbours: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """`(N, k)` bool: is image i among the k nearest of its own j-th nearest neighbour?"""
    out = torch.empty(neighbours.shape, dtype=torch.bool, device=neighbours.device)
    for a in range(0, neighbours.shape[0], chunk_size):
        rows = torch.arange(a, min(a + chunk_size, neighbours.shape[0]), device=neighbours.device)
        out[rows] = (neighbours[neighbours[rows]] == rows[:, None, None]).any(dim=-1)
    return out


def _encode(
    dist: GalleryDistances,
    neighbours: torch.Tensor,
    reciprocal: torch.Tensor,
    half_reciprocal: torch.Tensor,
    row_max: torch.Tensor,
    chunk_size: int,
) -> torch.Tensor:
    """The k-reciprocal encoding V `(N, N)` sparse: over each image's expanded k-reciprocal set, weights
    exp(-normalised distance) summing to 1. A candidate's half-size reciprocal set joins the expansion when
    more than 2/3 of it lies in the image's own k-reciprocal set."""
    x = dist.gallery
    n, k = neighbours.shape
    h = half_reciprocal.shape[1]
    rows_out, cols_out, vals_out = [], [], []
    buf = torch.empty(min(chunk_size, n), n, dtype=x.dtype, device=x.device)
    for a in progress(range(0, n, chunk_size), desc="rerank: encode", unit="chunk"):
        own, own_ok = neighbours[a : a + chunk_size], reciprocal[a : a + chunk_size]  # (C, k)
        cand_set, cand_ok = neighbours[own, :h], half_reciprocal[own]  # (C, k, h): each candidate's set
        in_own = ((cand_set[..., None] == own[:, None, None, :]) & own_ok[:, None, None, :]).any(dim=-1)
        inside = (in_own & cand_ok).sum(dim=-1)  # (C, k)
        accept = own_ok & (3 * inside > 2 * cand_ok.sum(dim=-1))
        members = torch.cat(
            [torch.where(own_ok, own, n), torch.where(accept[..., None] & cand_ok, cand_set, n).flatten(1)], dim=1
        )
        members = torch.sort(members, dim=1).values
        members[:, 1:][members[:, 1:] == members[:, :-1]] = n  # duplicates out
        ok = members < n
        # The rows' distances again, as in pass 1 (same chunks, same values): a matrix product is far cheaper
        # than gathering each member's features.
        rows = x[a : a + chunk_size]
        d = dist(rows, out=buf[: rows.shape[0]]).gather(1, members.clamp_max(n - 1)).square_()
        weight = torch.where(ok, torch.exp(-d / row_max[a : a + chunk_size, None]), 0.0)
        weight = weight / weight.sum(dim=1, keepdim=True)
        r, c = ok.nonzero(as_tuple=True)
        rows_out.append(r + a)
        cols_out.append(members[r, c])
        vals_out.append(weight[r, c])
    return torch.sparse_coo_tensor(
        torch.stack([torch.cat(rows_out), torch.cat(cols_out)]), torch.cat(vals_out), (n, n)
    ).coalesce()


def _final(
    v: torch.Tensor,
    num_q: int,
    row_max: torch.Tensor,
    to_gallery: GalleryDistances,
    q: torch.Tensor,
    lambda_value: float,
    chunk_size: int,
) -> torch.Tensor:
    """Jaccard distance between query and gallery encodings, blended with the normalised distance: `(Q, G)`."""
    rows, cols = v.indices()
    vals = v.values()
    num_g = to_gallery.gallery.shape[0]
    # Inverted index over the gallery rows: for each column, its gallery rows and values (column-major).
    is_g = rows >= num_q
    g_rows, g_cols, g_vals = rows[is_g] - num_q, cols[is_g], vals[is_g]
    order = torch.argsort(g_cols, stable=True)
    g_rows, g_cols, g_vals = g_rows[order], g_cols[order], g_vals[order]
    col_start = torch.searchsorted(g_cols, torch.arange(v.shape[1] + 1, device=g_cols.device))
    q_end = int(torch.searchsorted(rows, torch.tensor([num_q], device=rows.device)))
    q_rows, q_cols, q_vals = rows[:q_end], cols[:q_end], vals[:q_end]

    out = torch.empty(num_q, num_g, dtype=torch.float32, device=q.device)
    for a in progress(range(0, num_q, chunk_size), desc="rerank: jaccard", unit="chunk"):
        b = min(a + chunk_size, num_q)
        lo, hi = (int(t) for t in torch.searchsorted(q_rows, torch.tensor([a, b], device=q_rows.device)))
        shared = torch.zeros(b - a, num_g, dtype=vals.dtype, device=q.device)
        counts = col_start[q_cols[lo:hi] + 1] - col_start[q_cols[lo:hi]]
        # Steps of consecutive query non-zeros expanding to about _PAIRS_PER_STEP pairs each bound memory.
        _, step_sizes = torch.unique_consecutive((torch.cumsum(counts, 0) - 1) // _PAIRS_PER_STEP, return_counts=True)
        s = lo
        for size in step_sizes.tolist():
            e, cnt = s + size, counts[s - lo : s - lo + size]
            item = torch.repeat_interleave(torch.arange(s, e, device=cnt.device), cnt)
            within = torch.arange(item.numel(), device=cnt.device) - (torch.cumsum(cnt, 0) - cnt).repeat_interleave(cnt)
            pos = col_start[q_cols[item]] + within
            mins = torch.minimum(q_vals[item], g_vals[pos])
            shared.index_put_((q_rows[item] - a, g_rows[pos]), mins, accumulate=True)
            s = e
        jaccard = 1.0 - shared / (2.0 - shared)
        original = to_gallery(q[a:b]).square_() / row_max[a:b, None]
        out[a:b] = (jaccard * (1.0 - lambda_value) + original * lambda_value).float()
    return out
