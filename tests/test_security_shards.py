"""Hostile shards: tiny crafted files that would claim gigabytes, overflow ids, crash a drawing call or run a
shell command. Each crafted sample is skipped and counted before anything large is allocated, the other samples
are read, and an index.json naming a shard by URL scheme, absolute path or '..' is one error line."""

from __future__ import annotations

import io
import json
import logging.handlers
import os
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from reid3dsl.config import Config, StorageConfig, load_config
from reid3dsl.data.index import load_index
from reid3dsl.data.pipeline import eval_batches, train_batches
from reid3dsl.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
IDS, PER_ID = 4, 6


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def _member(name: str, data: bytes, size: int | None = None) -> bytes:
    """A tar member holding `data`; its header claims `size` bytes when given."""
    info = tarfile.TarInfo(name)
    info.size = len(data) if size is None else size
    return info.tobuf(tarfile.GNU_FORMAT) + _padded(data)


def _sparse_member(name: str, data: bytes, real_size: int) -> bytes:
    """A GNU sparse member: `data` stored at offset 0 of a file `real_size` bytes long, the rest a hole."""
    info = tarfile.TarInfo(name)
    info.size, info.type = len(data), tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[386:398] = tarfile.itn(0, 12, tarfile.GNU_FORMAT)  # sparse map: one chunk at offset 0 ...
    header[398:410] = tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)  # ... of the stored bytes
    header[483:495] = tarfile.itn(real_size, 12, tarfile.GNU_FORMAT)  # the size once expanded
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + _padded(data)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width x height pixels."""
    data = bytearray(cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes())
    i = 2
    while data[i + 1] != 0xC0:  # walk the marker segments to the frame header
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    data[i + 5 : i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _png_claiming(width: int, height: int) -> bytes:
    """A small grey PNG whose IHDR claims width x height pixels (with a valid CRC)."""
    data = bytearray(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def _npy_claiming(shape: tuple[int, ...]) -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return stream.getvalue()


def _meta(old: bytes, **fields: object) -> bytes:
    return json.dumps({**json.loads(old), **fields}).encode()


# case → (member replaced, its crafted tar bytes from (member name, original data), what the skip reason says).
Craft = Callable[[str, bytes], bytes]
CASES: dict[str, tuple[str, Craft, str]] = {
    "kp.npy header claims (2**40, 3)": (
        "kp.npy", lambda name, old: _member(name, _npy_claiming((2**40, 3))), "header says shape"),
    "json of 200,000 '['": ("json", lambda name, old: _member(name, b"[" * 200_000), "200000 bytes"),
    "json nested 50,000 deep": ("json", lambda name, old: _member(name, b"[" * 50_000), "nested too deeply"),
    "pid 2**70": ("json", lambda name, old: _member(name, _meta(old, pid=2**70)), "at most 2147483647"),
    "camid 2**31": ("json", lambda name, old: _member(name, _meta(old, camid=2**31)), "at most 2147483647"),
    "clothes '\\udcff'": ("json", lambda name, old: _member(name, _meta(old, clothes="\udcff")), "printable"),
    "jpg header says 8000x8000": (
        "jpg", lambda name, old: _member(name, _jpeg_claiming(8000, 8000)), "header says 8000x8000"),
    "mask header says 9000x9000": (
        "mask.png", lambda name, old: _member(name, _png_claiming(9000, 9000)), "header says 9000x9000"),
    "mask header says 100000x100000": (
        "mask.png", lambda name, old: _member(name, _png_claiming(100_000, 100_000)), "not a readable PNG header"),
    "GNU sparse jpg of 200 MB": (
        "jpg", lambda name, old: _sparse_member(name, old, 200 << 20), f"is {200 << 20} bytes"),
}
# The victims: one sample per case, all in one shard of each split, leaving pids 3 and 4 whole for P x K batches.
VICTIMS = {case: f"{pid:03d}_{j:02d}" for case, (pid, j) in
           zip(CASES, [(p, j) for p in range(1, IDS + 1) for j in range(PER_ID)], strict=False)}


def _rewrite(shard: Path, craft: Callable[[str, bytes], bytes | None]) -> None:
    """Rebuild a shard member by member; `craft(name, data)` gives a member's new tar bytes (None: unchanged)."""
    out = []
    with tarfile.open(shard) as tar:
        for info in tar.getmembers():
            data = tar.extractfile(info).read()  # type: ignore[union-attr]
            out.append(craft(info.name, data) or _member(info.name, data))
    shard.write_bytes(b"".join(out) + b"\0" * 2 * tarfile.BLOCKSIZE)


def _craft_every_case(name: str, data: bytes) -> bytes | None:
    key, ext = name.split("/", 1)[1].split(".", 1)
    for case, (member, craft, _) in CASES.items():
        if VICTIMS[case] == key and member == ext:
            return craft(name, data)
    return None


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, toy_shards: Callable[..., str]) -> str:
    """A data set whose train and gallery shards each hold one crafted sample per case among good ones."""
    root = toy_shards(tmp_path_factory.mktemp("hostile") / "toy", ids=IDS, per_id=PER_ID, shard_size=100,
                      splits=("train", "gallery"))
    index = load_index(root, StorageConfig())
    for split in ("train", "gallery"):
        (shard,) = index.split(split).shards
        _rewrite(Path(shard.url), _craft_every_case)
    return root


def _config(root: str, *extra: str) -> Config:
    return load_config(None, [f"data.root={root}", "data.loader_workers=0", "data.shuffle_buffer=0",
                              "train.batch_size=4", "data.imgs_per_id=2", *extra], env={})


@pytest.fixture(scope="module")
def gallery_read(hostile: str) -> tuple[list[str], int, list[str]]:
    """One evaluation pass over the hostile gallery: (keys read, samples counted as skipped, warnings logged)."""
    handler = logging.handlers.BufferingHandler(capacity=10_000)
    logger = logging.getLogger("reid3dsl.data.reader")
    logger.addHandler(handler)
    try:
        batches = list(eval_batches(_config(hostile), "gallery", 0, 1, batch_size=5))
    finally:
        logger.removeHandler(handler)
    warnings = [record.getMessage() for record in handler.buffer]
    return [k for b in batches for k in b["key"]], sum(int(b["skipped"]) for b in batches), warnings


@pytest.mark.parametrize("case", CASES)
def test_a_crafted_sample_is_skipped_with_its_reason_and_the_others_are_read(
    case: str, gallery_read: tuple[list[str], int, list[str]]
) -> None:
    keys, skipped, warnings = gallery_read
    victim = f"gallery/{VICTIMS[case]}"
    assert victim not in keys
    reasons = [w for w in warnings if f"'{victim}'" in w]
    assert len(reasons) == 1 and CASES[case][2] in reasons[0], reasons
    assert skipped == len(CASES)
    assert sorted(keys) == sorted(
        f"gallery/{pid:03d}_{j:02d}" for pid in range(1, IDS + 1) for j in range(PER_ID)
        if f"{pid:03d}_{j:02d}" not in VICTIMS.values()
    )


def test_training_reads_only_the_good_samples_of_a_hostile_shard_and_counts_the_rest(hostile: str) -> None:
    batches = train_batches(_config(hostile), 0, 1)
    drawn = [next(batches) for _ in range(12)]  # 48 samples: more than three passes over the 14 good ones
    keys = {k for b in drawn for k in b["key"]}
    assert keys and not keys & {f"train/{v}" for v in VICTIMS.values()}
    assert sum(int(b["skipped"]) for b in drawn) >= 2 * len(CASES)


def test_shards_inspect_of_a_hostile_data_set_reports_the_skipped_samples_and_draws_the_grid(
    hostile: str, tmp_path: Path
) -> None:
    grid = tmp_path / "grid.png"
    proc = subprocess.run([sys.executable, "-m", "shards", "inspect", hostile, "--grid", str(grid)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    good = IDS * PER_ID - len(CASES)
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["train"],
                                                                                                      ["gallery"])}
    assert rows["train"][1] == rows["gallery"][1] == str(good)
    assert rows["train"][-1] == rows["gallery"][-1] == str(len(CASES))
    assert cv2.imread(str(grid)) is not None


def test_a_member_header_claiming_more_bytes_than_the_shard_holds_ends_that_shard_only(
    tmp_path: Path, toy_shards: Callable[..., str]
) -> None:
    root = toy_shards(tmp_path / "toy", ids=2, per_id=5, shard_size=5, splits=("gallery",))
    first = Path(load_index(root, StorageConfig()).split("gallery").shards[0].url)
    # Skipping the member, tarfile would read through 2**40 bytes that are not there.
    _rewrite(first, lambda name, data: _member(name, data, size=2**40) if name == "gallery/001_02.jpg" else None)
    batches = list(eval_batches(_config(root), "gallery", 0, 1, batch_size=4))
    keys = [k for b in batches for k in b["key"]]
    assert keys == ["gallery/001_00", "gallery/001_01", *(f"gallery/002_{j:02d}" for j in range(5))]
    assert sum(int(b["skipped"]) for b in batches) == 3  # the sample with that member and the two after it


BAD_NAMES = ["pipe:touch {marker}", "file:///etc/hostname", "/etc/hostname", "../elsewhere/train-000000.tar",
             "sub/../../train-000000.tar", "s3://other-bucket/train-000000.tar"]


def _point_index_at(root: Path, name: str) -> None:
    index_file = root / "index.json"
    doc = json.loads(index_file.read_text())
    doc["splits"]["train"]["shards"][0]["name"] = name
    index_file.write_text(json.dumps(doc))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_an_index_naming_a_shard_by_scheme_absolute_path_or_parent_is_one_error_naming_the_index(
    name: str, tmp_path: Path, toy_shards: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    root = Path(toy_shards(tmp_path / "toy", ids=2, per_id=2))
    _point_index_at(root, name.format(marker=marker))
    monkeypatch.chdir(root)  # with the data root '.', the name alone is the URL a reader would open
    with pytest.raises(UserError) as info:
        next(train_batches(_config("."), 0, 1))
    message = str(info.value)
    assert "index.json" in message and "shard name" in message and "plain name" in message
    assert "\n" not in message and not marker.exists()


def test_shards_inspect_refuses_a_pipe_shard_name_in_one_line_without_running_it(
    tmp_path: Path, toy_shards: Callable[..., str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shards.__main__ import main

    root = Path(toy_shards(tmp_path / "toy", ids=2, per_id=2))
    _point_index_at(root, "pipe:touch X")
    monkeypatch.chdir(root)
    capsys.readouterr()  # the fixture's own log line (once an earlier test has set up logging), not the CLI's
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "."])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and "index.json" in line and "'pipe:touch X'" in line
    assert not (root / "X").exists()


def test_the_eval_cli_refuses_a_pipe_shard_name_in_one_line_without_running_it(
    tmp_path: Path, toy_shards: Callable[..., str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reid3dsl.eval.__main__ import main
    from reid3dsl.models.io import save_model
    from reid3dsl.models.threedsl import ThreeDSL

    cfg = Config.model_validate({"model": {"streams": "rgb"}, "data": {"height": 32, "width": 16}})
    model = save_model(ThreeDSL.from_config(cfg, num_classes=2), cfg, 2, tmp_path / "model.pt")
    root = Path(toy_shards(tmp_path / "toy", ids=2, per_id=2, splits=("train", "query", "gallery")))
    doc = json.loads((root / "index.json").read_text())
    doc["splits"]["query"]["shards"][0]["name"] = "pipe:touch X"
    (root / "index.json").write_text(json.dumps(doc))
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(model), "--data", "."])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error: ")]
    assert "index.json" in line and "'pipe:touch X'" in line
    assert not (root / "X").exists()


def test_an_s3_index_naming_a_shard_by_scheme_is_refused(
    toy_shards: Callable[..., str], s3_bucket: tuple[str, dict[str, str]]
) -> None:
    from reid3dsl.data.s3 import put_bytes, read_bytes

    bucket, settings = s3_bucket
    storage = StorageConfig(**settings, retries=0)
    root = toy_shards(f"s3://{bucket}/toy", ids=2, per_id=2, storage=storage)
    doc = json.loads(read_bytes(f"{root}/index.json", storage))
    doc["splits"]["train"]["shards"][0]["name"] = "pipe:touch X"
    put_bytes(storage, json.dumps(doc).encode(), f"{root}/index.json")
    with pytest.raises(UserError, match=rf"{root}/index.json.*shard name 'pipe:touch X': expected a plain name"):
        load_index(root, storage)


def test_opencv_refuses_to_decode_past_the_largest_allowed_side_in_any_reid3dsl_process(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(cv2.imencode(".png", np.zeros((4097, 4097), np.uint8))[1].tobytes())
    code = ("import sys, reid3dsl.data.schema as s; "
            f"print(s.decode_image(open({str(big)!r}, 'rb').read()) is None)")
    env_free = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"})
    assert env_free.stdout.strip() == "True", env_free.stderr[-2000:]
