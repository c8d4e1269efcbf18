"""Each data set adapter on a small folder named exactly as the real data set names its files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from reid3dsl.errors import UserError
from shards.__main__ import main
from shards.adapters import scan

JPEG = cv2.imencode(".jpg", np.zeros((8, 4, 3), np.uint8))[1].tobytes()


def touch(root: Path, rel: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(JPEG)


def by_split(images: list) -> Counter:
    return Counter(im.split for im in images)


def test_market1501_drops_junk_keeps_distractors_in_gallery_and_reads_every_camera(tmp_path: Path) -> None:
    for cam in range(1, 7):
        touch(tmp_path, f"bounding_box_train/0002_c{cam}s1_000451_03.jpg")
        touch(tmp_path, f"bounding_box_train/0007_c{cam}s3_070223_01.jpg")
        touch(tmp_path, f"bounding_box_test/-1_c{cam}s1_000401_03.jpg")  # junk
        touch(tmp_path, f"bounding_box_test/0000_c{cam}s1_000151_01.jpg")  # distractor
        touch(tmp_path, f"bounding_box_test/0001_c{cam}s1_001051_03.jpg")
        touch(tmp_path, f"query/0001_c{cam}s1_001051_00.jpg")
    (tmp_path / "bounding_box_train" / "Thumbs.db").write_bytes(b"x")
    images = scan("market1501", tmp_path)
    assert by_split(images) == {"train": 12, "gallery": 12, "query": 6}
    assert {im.pid for im in images if im.split == "train"} == {2, 7}
    assert {im.pid for im in images if im.split == "gallery"} == {0, 1}
    assert all(im.pid != -1 for im in images)
    assert {im.camid for im in images} == set(range(6))
    assert all(im.clothes is None for im in images)
    q = next(im for im in images if im.rel == "query/0001_c4s1_001051_00.jpg")
    assert (q.pid, q.camid, q.key) == (1, 3, "query/0001_c4s1_001051_00")


def test_dukemtmc_reads_eight_cameras(tmp_path: Path) -> None:
    for cam in range(1, 9):
        touch(tmp_path, f"bounding_box_train/0005_c{cam}_f00{cam}6985.jpg")
        touch(tmp_path, f"bounding_box_test/0019_c{cam}_f00{cam}1234.jpg")
        touch(tmp_path, f"query/0019_c{cam}_f00{cam}9999.jpg")
    images = scan("dukemtmc", tmp_path)
    assert by_split(images) == {"train": 8, "gallery": 8, "query": 8}
    assert {im.camid for im in images} == set(range(8))
    assert {im.pid for im in images} == {5, 19}


def test_prcc_gives_a_b_c_their_roles_and_outfits(tmp_path: Path) -> None:
    for pid in ("001", "002"):
        for cam in "ABC":
            touch(tmp_path, f"rgb/train/{pid}/{cam}_cropped_rgb{pid}.jpg")
            touch(tmp_path, f"rgb/train/{pid}/{cam}_cropped_rgb{pid}_2.jpg")
    touch(tmp_path, "rgb/val/003/A_cropped_rgb003.jpg")
    for cam in "ABC":
        for pid in ("101", "102", "103"):
            touch(tmp_path, f"rgb/test/{cam}/{pid}/cropped_rgb{pid}.jpg")
    images = scan("prcc", tmp_path)
    assert by_split(images) == {"train": 12, "gallery": 3, "query": 6}
    assert 3 not in {im.pid for im in images}  # rgb/val is not written
    train = {(im.camid, im.clothes) for im in images if im.split == "train" and im.pid == 1}
    assert train == {(0, "1_1"), (1, "1_1"), (2, "1_2")}  # A and B one outfit, C another
    test = {(im.split, im.camid, im.clothes) for im in images if im.pid == 102}
    assert test == {("gallery", 0, "102_1"), ("query", 1, "102_1"), ("query", 2, "102_2")}


def test_ltcc_parses_pid_clothes_and_camera(tmp_path: Path) -> None:
    for cam in range(1, 13):
        touch(tmp_path, f"train/001_{1 + cam % 2}_c{cam}_015850.png")
        touch(tmp_path, f"test/094_1_c{cam}_009780.png")
    touch(tmp_path, "query/094_2_c3_011451.png")
    images = scan("ltcc", tmp_path)
    assert by_split(images) == {"train": 12, "gallery": 12, "query": 1}
    assert {im.camid for im in images} == set(range(12))
    assert {im.clothes for im in images if im.split == "train"} == {"1_1", "1_2"}
    q = next(im for im in images if im.split == "query")
    assert (q.pid, q.camid, q.clothes) == (94, 2, "94_2")


def test_vcclothes_parses_pid_camera_clothes(tmp_path: Path) -> None:
    for cam in range(1, 5):
        touch(tmp_path, f"train/0001-{cam:02d}-{1 + cam % 2:02d}-01.jpg")
        touch(tmp_path, f"gallery/0300-{cam:02d}-01-{cam:02d}.jpg")
        touch(tmp_path, f"query/0300-{cam:02d}-03-07.jpg")
    images = scan("vcclothes", tmp_path)
    assert by_split(images) == {"train": 4, "gallery": 4, "query": 4}
    assert {im.camid for im in images} == set(range(4))
    assert {im.clothes for im in images if im.pid == 300} == {"300_1", "300_3"}


def test_list_reads_paths_labels_and_optional_clothes(tmp_path: Path) -> None:
    for rel in ("imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg", "imgs/d.jpg"):
        touch(tmp_path, rel)
    (tmp_path / "train.txt").write_text("# path pid camid clothes\nimgs/a.jpg 3 0 red\nimgs/b.jpg 3 1 blue\n\n")
    (tmp_path / "query.txt").write_text("imgs/c.jpg 9 2\nimgs/d.jpg -1 0\n")
    images = scan("list", tmp_path)
    assert [(im.split, im.pid, im.camid, im.clothes) for im in images] == [
        ("train", 3, 0, "3_red"),
        ("train", 3, 1, "3_blue"),
        ("query", 9, 2, None),
    ]


def test_a_bad_line_in_a_list_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("imgs/a.jpg 3 0\nimgs/b.jpg three 0\n")
    with pytest.raises(UserError, match=r"train.txt:2: pid and camid: expected integers"):
        scan("list", tmp_path)


def test_a_file_name_outside_the_rule_names_the_file_and_the_rule(tmp_path: Path) -> None:
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        (tmp_path / folder).mkdir()
    touch(tmp_path, "bounding_box_train/person_one.jpg")
    with pytest.raises(UserError, match=r"bounding_box_train/person_one.jpg': expected a name like 0002_c1s1"):
        scan("market1501", tmp_path)


def test_a_folder_of_another_layout_fails_with_one_line_saying_what_was_expected_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    touch(tmp_path, "rgb/train/001/A_cropped_rgb001.jpg")  # a PRCC folder given as Market-1501
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--dataset", "market1501", "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "expected bounding_box_train/, query/, bounding_box_test/" in err and str(tmp_path) in err
    assert not (tmp_path / "out" / "market1501").exists()
