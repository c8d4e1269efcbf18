"""k-reciprocal re-ranking: the chunked, sparse implementation reproduces the authors' dense algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from reid3dsl.errors import UserError
from reid3dsl.eval.metrics import evaluate, pairwise_distances
from reid3dsl.eval.rerank import rerank


def dense_rerank(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """The authors' algorithm (Zhong et al. 2017, as ReID toolboxes ship it): whole matrices, a loop per
    image. Only change: a stable argsort, so that the neighbour order is well defined."""
    dist = np.concatenate([np.concatenate([q_q, q_g], axis=1), np.concatenate([q_g.T, g_g], axis=1)], axis=0)
    dist = np.power(dist, 2).astype(np.float32)
    dist = np.transpose(1.0 * dist / np.max(dist, axis=0))
    v = np.zeros_like(dist).astype(np.float32)
    initial_rank = np.argsort(dist, kind="stable").astype(np.int32)
    num_q, num_all = q_g.shape[0], dist.shape[0]
    for i in range(num_all):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_reciprocal = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            half = int(np.around(k1 / 2.0))
            c_forward = initial_rank[candidate, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            c_reciprocal = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_reciprocal, k_reciprocal)) > 2.0 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        v[i, expansion] = weight / np.sum(weight)
    dist = dist[:num_q]
    if k2 != 1:
        v = np.stack([np.mean(v[initial_rank[i, :k2], :], axis=0) for i in range(num_all)])
    inverted = [np.where(v[:, i] != 0)[0] for i in range(num_all)]
    jaccard = np.zeros_like(dist)
    for i in range(num_q):
        shared = np.zeros((1, num_all), dtype=np.float32)
        for k in np.where(v[i, :] != 0)[0]:
            shared[0, inverted[k]] += np.minimum(v[i, k], v[inverted[k], k])
        jaccard[i] = 1 - shared / (2.0 - shared)
    return (jaccard * (1 - lam) + dist * lam)[:, num_q:]


def clustered(seed: int, num_q: int = 24, num_g: int = 120, ids: int = 10, dim: int = 16):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim))
    q_pids, g_pids = rng.integers(0, ids, num_q), rng.integers(0, ids, num_g)
    qf = (centres[q_pids] + 0.8 * rng.standard_normal((num_q, dim))).astype(np.float32)
    gf = (centres[g_pids] + 0.8 * rng.standard_normal((num_g, dim))).astype(np.float32)
    return qf, gf, q_pids, g_pids


@pytest.mark.parametrize(("metric", "k1", "k2", "lam"), [("euclidean", 20, 6, 0.3), ("cosine", 7, 1, 0.5),
                                                         ("euclidean", 5, 3, 0.0)])
def test_rerank_reproduces_the_authors_dense_algorithm(metric, k1, k2, lam) -> None:
    qf, gf, _, _ = clustered(seed=k1)
    d = {name: pairwise_distances(a, b, metric).numpy() for name, (a, b) in
         {"qg": (qf, gf), "qq": (qf, qf), "gg": (gf, gf)}.items()}
    expected = dense_rerank(d["qg"], d["qq"], d["gg"], k1, k2, lam)
    for chunk in (5, 512):
        got = rerank(qf, gf, k1=k1, k2=k2, lambda_value=lam, metric=metric, chunk_size=chunk).numpy()
        assert got.shape == (qf.shape[0], gf.shape[0])
        np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)


def test_reranked_distances_feed_evaluate() -> None:
    qf, gf, q_pids, g_pids = clustered(seed=1)
    cams = (np.zeros(len(q_pids), dtype=int), np.ones(len(g_pids), dtype=int))
    out = evaluate(rerank(qf, gf), q_pids, g_pids, *cams)
    assert out["num_valid"] == len(q_pids) and 0.0 < out["mAP"] <= 1.0


@pytest.mark.parametrize(("kwargs", "name"), [({"k1": 0}, "k1"), ({"k2": 30}, "k2"), ({"lambda_value": 2.0}, "lambda")])
def test_rerank_rejects_bad_parameters_naming_them(kwargs, name) -> None:
    qf, gf, _, _ = clustered(seed=2)
    with pytest.raises(UserError, match=name):
        rerank(qf, gf, **{"k1": 20, **kwargs})
