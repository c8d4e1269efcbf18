"""Keypoints: imported from COCO-style JSON (missing ones stored with confidence 0), or detected with a
Keypoint R-CNN read from a local weights file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from reid3dsl.config import StorageConfig
from reid3dsl.data.index import load_index
from reid3dsl.data.reader import SkipCounter, iter_samples
from reid3dsl.errors import UserError
from shards.__main__ import main
from shards.keypoints import load_keypoints


def values(seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    kp = np.stack([rng.uniform(0, 64, 17), rng.uniform(0, 128, 17), rng.uniform(0.1, 1.0, 17)], 1)
    kp[3, 2] = 0.0
    return [round(float(v), 3) for v in kp.ravel()]


def test_results_list_matches_by_path_keeps_the_best_person_and_leaves_the_rest_missing(tmp_path: Path) -> None:
    rels = ["query/0001_c1s1_001051_00.jpg", "query/0002_c2s1_000301_00.jpg", "bounding_box_test/0003_c1s1_1_01.jpg"]
    results = [
        {"image_id": "/data/market/query/0001_c1s1_001051_00.jpg", "keypoints": values(0), "score": 0.4},
        {"image_id": "/data/market/query/0001_c1s1_001051_00.jpg", "keypoints": values(1), "score": 0.9},
        {"image_id": "0002_c2s1_000301_00.jpg", "keypoints": values(2), "score": 0.8},  # bare file name
        {"image_id": "elsewhere/unrelated.jpg", "keypoints": values(3), "score": 0.8},
    ]
    path = tmp_path / "alphapose-results.json"
    path.write_text(json.dumps(results))
    kps = load_keypoints(path, rels)
    assert set(kps) == set(rels[:2])  # the third image has no detection: absent, stored as missing
    np.testing.assert_allclose(kps[rels[0]].ravel()[:6], values(1)[:6], rtol=1e-5)  # the higher score wins
    assert kps[rels[0]].shape == (17, 3) and kps[rels[0]].dtype == np.float32
    assert kps[rels[0]][3].tolist() == [0.0, 0.0, 0.0]  # confidence 0: coordinates not kept


def test_coco_annotations_turn_visibility_flags_into_confidence(tmp_path: Path) -> None:
    flags = [10, 20, 2] * 15 + [11, 21, 1] + [0, 0, 0]
    doc = {
        "images": [{"id": 7, "file_name": "train/a.jpg"}, {"id": 8, "file_name": "train/b.jpg"}],
        "annotations": [{"image_id": 7, "keypoints": flags, "num_keypoints": 16}],
    }
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps(doc))
    kps = load_keypoints(path, ["train/a.jpg", "train/b.jpg"])
    assert list(kps) == ["train/a.jpg"]
    assert kps["train/a.jpg"][:, 2].tolist() == [1.0] * 16 + [0.0]


def test_a_malformed_entry_names_the_file_and_entry(tmp_path: Path) -> None:
    path = tmp_path / "kp.json"
    path.write_text(json.dumps([{"image_id": "a.jpg", "keypoints": [1, 2, 3]}]))
    with pytest.raises(UserError, match=r"kp.json' entry 0 \(a.jpg\): keypoints: expected 51 numbers"):
        load_keypoints(path, ["a.jpg"])


def _list_dataset(root: Path, n: int) -> None:
    (root / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        cv2.imwrite(str(root / "imgs" / f"{i}.jpg"), rng.integers(0, 255, (128, 64, 3), dtype=np.uint8))
        lines.append(f"imgs/{i}.jpg {i + 1} 0")
    (root / "train.txt").write_text("\n".join(lines))


def test_imported_keypoints_reach_the_shards_and_images_without_detections_get_confidence_zero(tmp_path: Path) -> None:
    _list_dataset(tmp_path / "src", 3)
    path = tmp_path / "kp.json"
    path.write_text(json.dumps([{"image_id": "imgs/1.jpg", "keypoints": values(5), "score": 1.0}]))
    args = ["build", "--dataset", "list", "--root", str(tmp_path / "src"), "--out", str(tmp_path / "out")]
    assert main([*args, "--keypoints", str(path), "--masks", "none"]) == 0
    index = load_index(str(tmp_path / "out" / "list"), StorageConfig())
    samples = {s.key: s for s in iter_samples(index.split("train").shards, StorageConfig(), SkipCounter())}
    np.testing.assert_allclose(samples["imgs/1"].keypoints.ravel()[:3], values(5)[:3], rtol=1e-5)
    assert samples["imgs/0"].keypoints.tolist() == [[0.0, 0.0, 0.0]] * 17
    assert samples["imgs/2"].keypoints.tolist() == [[0.0, 0.0, 0.0]] * 17
    assert index.with_keypoints == 1


def test_detection_without_a_weights_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _list_dataset(tmp_path / "src", 1)
    args = ["build", "--dataset", "list", "--root", str(tmp_path / "src"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--keypoints", "detect", "--detector-weights", str(tmp_path / "krcnn.pth")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "krcnn.pth': not found" in err and "nothing is downloaded" in err


def test_detection_runs_keypoint_rcnn_from_a_local_weights_file(tmp_path: Path) -> None:
    import torch
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    # Untrained weights (nothing may be downloaded): they prove loading and running, not accuracy.
    torch.manual_seed(0)
    state = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "krcnn.pth")
    _list_dataset(tmp_path / "src", 1)
    args = ["build", "--dataset", "list", "--root", str(tmp_path / "src"), "--out", str(tmp_path / "out")]
    detect = ["--keypoints", "detect", "--detector-weights", str(tmp_path / "krcnn.pth"), "--masks", "none"]
    assert main([*args, *detect]) == 0
    index = load_index(str(tmp_path / "out" / "list"), StorageConfig())
    (sample,) = iter_samples(index.split("train").shards, StorageConfig(), SkipCounter())
    kp = sample.keypoints
    assert kp.shape == (17, 3) and ((kp[:, 2] >= 0) & (kp[:, 2] <= 1)).all()
