"""ReID metrics: hand-built cases with known answers, agreement with the per-query reference on random
problems in every protocol, and invariance to input form (features vs distances, numpy vs torch, chunks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid3dsl.errors import UserError
from reid3dsl.eval import metrics, ranking
from reid3dsl.eval.metrics import Features, evaluate, pairwise_distances, prcc
from reid3dsl.eval.reference import evaluate_reference

BOTH = pytest.mark.parametrize("impl", [evaluate, evaluate_reference], ids=["evaluate", "reference"])


def assert_same(a: dict, b: dict, tol: float = 1e-6) -> None:
    assert a["num_valid"] == b["num_valid"]
    np.testing.assert_allclose(a["cmc"], b["cmc"], atol=tol, rtol=0)
    assert a["mAP"] == pytest.approx(b["mAP"], abs=tol)
    assert a["mINP"] == pytest.approx(b["mINP"], abs=tol)


@BOTH
def test_market_protocol_drops_same_camera_junk_keeps_distractors_and_breaks_ties_by_index(impl) -> None:
    #            g0    g1    g2    g3    g4    g5
    g_pids = [1, 2, 1, 0, 1, 3]  # g3 is a distractor (pid 0): a negative like any other
    g_cams = [0, 1, 1, 2, 2, 1]
    distmat = np.array(
        [
            # query pid 1 cam 0: g0 is junk (same pid, same camera); kept order g1 g2* g3 g4* g5
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            # query pid 9: no match in the gallery -> skipped
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            # query pid 2 cam 0: g1 ties with g0, g2, g4, g5 at 0.3; a stable sort puts g0 before it, so
            # the kept order is g3, g0, g1*, ... -> its good match is at rank 3
            [0.3, 0.3, 0.3, 0.1, 0.3, 0.3],
        ]
    )
    out = impl(distmat, [1, 9, 2], g_pids, [0, 0, 0], g_cams, max_rank=4)
    assert out["num_valid"] == 2
    np.testing.assert_allclose(out["cmc"], [0.0, 0.5, 1.0, 1.0])
    # AP: query 1 (1/2 + 2/4) / 2 = 1/2; query 3: 1/3. INP: 2/4 and 1/3.
    assert out["mAP"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert out["mINP"] == pytest.approx((0.5 + 1 / 3) / 2)


@BOTH
def test_cc_and_sc_protocols_pick_good_and_junk_by_clothes(impl) -> None:
    # g0 same camera | g1 other camera, same clothes | g2 other pid | g3, g4 other camera and clothes | g5 distractor
    g_pids = [1, 1, 2, 1, 1, 0]
    g_cams = [0, 1, 1, 2, 1, 3]
    g_clothes = ["1_a", "1_a", "2_b", "1_b", "1_b", "0_z"]
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    args = (d, [1], g_pids, [0], g_cams, ["1_a"], g_clothes)
    cc = impl(*args, mode="cc", max_rank=3)  # kept: g2, g3*, g4*, g5
    np.testing.assert_allclose(cc["cmc"], [0.0, 1.0, 1.0])
    assert cc["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert cc["mINP"] == pytest.approx(2 / 3)
    sc = impl(*args, mode="sc", max_rank=3)  # kept: g1*, g2, g5
    np.testing.assert_allclose(sc["cmc"], [1.0, 1.0, 1.0])
    assert sc["mAP"] == pytest.approx(1.0) and sc["mINP"] == pytest.approx(1.0)
    standard = impl(*args, mode="standard", max_rank=3)  # kept: g1*, g2, g3*, g4*, g5
    assert standard["mAP"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert standard["mINP"] == pytest.approx(3 / 4)


@BOTH
def test_queries_without_a_valid_match_are_skipped_and_none_left_gives_zeros(impl) -> None:
    # Query pid 2 in clothes "b": its only gallery image wears "b" too -> junk under cc, good under sc.
    args = (np.array([[0.5, 0.1]]), [2], [2, 3], [0], [1, 1], ["b"], ["b", "c"])
    assert impl(*args, mode="sc")["num_valid"] == 1
    cc = impl(*args, mode="cc", max_rank=2)
    assert cc["num_valid"] == 0 and cc["mAP"] == 0.0 and cc["mINP"] == 0.0
    np.testing.assert_array_equal(cc["cmc"], [0.0, 0.0])


def random_problem(rng: np.random.Generator, ties: bool) -> tuple:
    num_q, num_g, ids = int(rng.integers(1, 40)), int(rng.integers(1, 90)), int(rng.integers(1, 8))
    labels = (
        rng.integers(0, ids, num_q),
        rng.integers(0, ids, num_g),
        rng.integers(0, 3, num_q),
        rng.integers(0, 3, num_g),
        rng.integers(0, 3, num_q),
        rng.integers(0, 3, num_g),
    )
    # Small integers make ties everywhere (between goods, junk and negatives); floats make none.
    distmat = rng.integers(0, 4, (num_q, num_g)).astype(np.float32) if ties else rng.random((num_q, num_g))
    return distmat, labels


@pytest.mark.parametrize("mode", ["standard", "cc", "sc"])
def test_evaluate_equals_the_per_query_reference_on_random_problems(mode) -> None:
    rng = np.random.default_rng({"standard": 0, "cc": 1, "sc": 2}[mode])
    for trial in range(60):
        distmat, labels = random_problem(rng, ties=trial % 2 == 0)
        max_rank = int(rng.choice([1, 5, 200]))  # 200 is beyond every gallery here
        chunk = int(rng.integers(1, 12))
        fast = evaluate(distmat, *labels, mode=mode, max_rank=max_rank, chunk_size=chunk)
        assert_same(fast, evaluate_reference(distmat, *labels, mode=mode, max_rank=max_rank))


def test_evaluate_equals_the_reference_on_a_market_like_problem() -> None:
    rng = np.random.default_rng(3)
    num_q, num_g, ids = 200, 3000, 150
    centres = rng.standard_normal((ids + 1, 64))
    g_pids = np.concatenate([rng.integers(1, ids + 1, num_g - 300), np.zeros(300, dtype=int)])
    q_pids = rng.integers(1, ids + 1, num_q)
    qf = centres[q_pids] + 1.5 * rng.standard_normal((num_q, 64))
    gf = centres[g_pids] + 1.5 * rng.standard_normal((num_g, 64))
    distmat = pairwise_distances(qf, gf, "euclidean").numpy()
    labels = (q_pids, g_pids, rng.integers(0, 6, num_q), rng.integers(0, 6, num_g))
    fast = evaluate(distmat, *labels, chunk_size=64)
    assert 0.1 < fast["mAP"] < 0.99  # a non-trivial ranking
    assert_same(fast, evaluate_reference(distmat, *labels))


def test_evaluate_equals_the_reference_when_rows_are_split_across_threads_and_cache_groups() -> None:
    # Big enough for the threaded path (>= 1M distances per chunk) and many sort groups per thread; coarse
    # distances make ties between good items and negatives common, so the tie resolution runs there too.
    rng = np.random.default_rng(9)
    num_q, num_g = 300, 4000
    assert num_q * num_g >= ranking._MIN_PARALLEL and ranking._GROUP_BYTES // (4 * num_g) < num_q // 4
    distmat = (rng.integers(0, 200, (num_q, num_g)) / 8.0).astype(np.float32)
    labels = (rng.integers(0, 60, num_q), rng.integers(0, 60, num_g), rng.integers(0, 4, num_q),
              rng.integers(0, 4, num_g), rng.integers(0, 2, num_q), rng.integers(0, 2, num_g))
    for mode in ("standard", "cc"):
        assert_same(evaluate(distmat, *labels, mode=mode), evaluate_reference(distmat, *labels, mode=mode))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_feature_input_gives_the_distance_matrix_result(metric) -> None:
    rng = np.random.default_rng(4)
    qf, gf = rng.standard_normal((50, 16)).astype(np.float32), rng.standard_normal((300, 16)).astype(np.float32)
    labels = (rng.integers(0, 20, 50), rng.integers(0, 20, 300), rng.integers(0, 3, 50), rng.integers(0, 3, 300))
    from_features = evaluate(Features(qf, gf, metric), *labels, chunk_size=7)
    from_distances = evaluate(pairwise_distances(qf, gf, metric), *labels)
    assert_same(from_features, from_distances)
    # and the distances themselves are the metric's
    d = pairwise_distances(qf, gf, metric).numpy()
    if metric == "euclidean":
        expected = np.linalg.norm(qf[:, None] - gf[None], axis=-1)
    else:
        unit_q = qf / np.linalg.norm(qf, axis=1, keepdims=True)
        expected = 1 - unit_q @ (gf / np.linalg.norm(gf, axis=1, keepdims=True)).T
    np.testing.assert_allclose(d, expected, atol=1e-5)


def test_feature_input_computes_distances_one_chunk_at_a_time(monkeypatch) -> None:
    rows_seen: list[int] = []
    original = metrics.GalleryDistances.__call__

    def spy(self, query, out=None):
        rows_seen.append(query.shape[0])
        return original(self, query, out=out)

    monkeypatch.setattr(metrics.GalleryDistances, "__call__", spy)
    rng = np.random.default_rng(5)
    labels = (rng.integers(0, 9, 100), rng.integers(0, 9, 400), rng.integers(0, 3, 100), rng.integers(0, 3, 400))
    evaluate(Features(rng.standard_normal((100, 8)), rng.standard_normal((400, 8))), *labels, chunk_size=16)
    assert max(rows_seen) <= 16 and sum(rows_seen) == 100


def test_evaluate_prints_nothing_and_reports_progress_only_to_its_callback(capfd: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(8)
    distmat = rng.random((100, 50)).astype(np.float32)
    labels = (rng.integers(0, 5, 100), rng.integers(0, 5, 50), rng.integers(0, 3, 100), rng.integers(0, 3, 50))
    chunks: list[int] = []
    evaluate(distmat, *labels, chunk_size=16, on_chunk=chunks.append)
    assert chunks == [16] * 6 + [4]
    drawn: list[int] = []
    prcc(distmat, *labels, chunk_size=64, draws=3, on_chunk=drawn.append)
    assert drawn == [64, 36] * 3
    evaluate(distmat, *labels)
    out, err = capfd.readouterr()
    assert out == "" and err == "", "the pure evaluation drew a progress bar"


def test_chunk_size_does_not_change_results() -> None:
    rng = np.random.default_rng(6)
    distmat = rng.integers(0, 5, (37, 120)).astype(np.float32)
    labels = (rng.integers(0, 6, 37), rng.integers(0, 6, 120), rng.integers(0, 3, 37), rng.integers(0, 3, 120),
              rng.integers(0, 2, 37), rng.integers(0, 2, 120))
    for mode in ("standard", "cc", "sc"):
        results = [evaluate(distmat, *labels, mode=mode, chunk_size=c) for c in (1, 5, 36, 37, 1000)]
        for r in results[1:]:
            assert_same(r, results[0], tol=0.0)


def test_numpy_torch_and_half_precision_inputs_give_the_same_result() -> None:
    rng = np.random.default_rng(7)
    # Values exactly representable in float16, with ties, so widening changes nothing.
    distmat = (rng.integers(0, 64, (30, 80)) / 8.0).astype(np.float16)
    labels = (rng.integers(0, 6, 30), rng.integers(0, 6, 80), rng.integers(0, 3, 30), rng.integers(0, 3, 80))
    expected = evaluate_reference(distmat.astype(np.float64), *labels)
    assert_same(evaluate(distmat, *labels), expected)
    assert_same(evaluate(torch.from_numpy(distmat).to(torch.bfloat16), *labels), expected)
    as_torch = [torch.from_numpy(x) for x in labels]
    assert_same(evaluate(torch.from_numpy(distmat.astype(np.float64)), *as_torch), expected)


def test_prcc_scores_each_query_against_one_gallery_image_per_identity() -> None:
    rng = np.random.default_rng(8)
    num_ids, per_id, num_q = 12, 5, 40
    g_pids = np.repeat(np.arange(num_ids), per_id)
    q_pids = rng.integers(0, num_ids, num_q)
    distmat = rng.random((num_q, num_ids * per_id))
    q_cams, g_cams = np.full(num_q, 1), np.zeros(num_ids * per_id, dtype=int)  # PRCC: gallery camera A only
    full = evaluate(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=num_ids)
    single = prcc(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=num_ids, draws=10, seed=0)
    # One good image per query in every draw: AP = INP = 1 / rank, and every rank is within the identities.
    assert single["mAP"] == pytest.approx(single["mINP"], abs=1e-12)
    assert full["mAP"] != pytest.approx(full["mINP"])
    assert single["cmc"][-1] == 1.0 and single["num_valid"] == num_q
    # Seeded: the same seed repeats, another seed draws other galleries; ten draws average single draws.
    assert prcc(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=num_ids, draws=10, seed=0)["mAP"] == single["mAP"]
    one_draws = [prcc(distmat, q_pids, g_pids, q_cams, g_cams, draws=1, seed=s)["mAP"] for s in range(3)]
    assert len(set(one_draws)) > 1
    # Features give the same draws as the distance matrix they define.
    qf, gf = rng.standard_normal((num_q, 8)), rng.standard_normal((num_ids * per_id, 8))
    by_features = prcc(Features(qf, gf), q_pids, g_pids, q_cams, g_cams, draws=3, seed=1)
    by_distances = prcc(pairwise_distances(qf, gf).numpy(), q_pids, g_pids, q_cams, g_cams, draws=3, seed=1)
    assert_same(by_features, by_distances)
    as_torch = Features(torch.from_numpy(qf), torch.from_numpy(gf))
    assert_same(prcc(as_torch, q_pids, g_pids, q_cams, g_cams, draws=3, seed=1), by_distances)
    assert_same(prcc(pairwise_distances(qf, gf), q_pids, g_pids, q_cams, g_cams, draws=3, seed=1), by_distances)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"distmat": np.array([[0.1, np.nan]])}, "NaN"),
        ({"q_pids": [1, 2]}, "q_pids"),
        ({"g_camids": [0]}, "g_camids"),
        ({"mode": "cc"}, "clothes"),
        ({"mode": "ranked"}, "mode"),
        ({"max_rank": 0}, "max_rank"),
        ({"distmat": np.zeros((1, 2, 1))}, "distmat"),
    ],
)
def test_bad_input_is_rejected_with_one_line_naming_it(kwargs, names) -> None:
    args = {"distmat": np.array([[0.1, 0.2]]), "q_pids": [1], "g_pids": [1, 2], "q_camids": [0], "g_camids": [1, 1]}
    args.update(kwargs)
    with pytest.raises(UserError, match=names) as err:
        evaluate(**args)
    assert "\n" not in str(err.value)
