"""Data set adapters: a folder in the data set's own layout → the list of its images with labels.

Each adapter is a folder walk and a file-name rule (docs/shard-format.md has them as a table): Market-1501
and DukeMTMC-reID (`0002_c1s1_000451_03.jpg`: pid, camera; pid -1 junk dropped, pid 0 distractors kept in the gallery),
PRCC (`rgb/{train,test/A|B|C}/<pid>/`: camera A/B/C, A and B one outfit, C another; test A = gallery,
B = same-clothes query, C = clothes-changing query), LTCC (`001_1_c11_015850.png`: pid, clothes, camera),
VC-Clothes (`0001-01-01-01.jpg`: pid, camera, clothes, frame) and `list` (text files of
`relative/path pid camid [clothes]`). A folder that does not match fails with one line saying what was
expected where.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reid3dsl.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceImage:
    """One image of a data set: where it is and its labels (camid 0-based, clothes unique per pid+outfit)."""

    path: Path
    rel: str
    split: str
    pid: int
    camid: int
    clothes: str | None

    @property
    def key(self) -> str:
        """The sample key: the relative path without extension ('.' is webdataset's extension separator)."""
        return self.rel.rsplit(".", 1)[0].replace(".", "_")


def _require(root: Path, dataset: str, folders: list[str]) -> None:
    if not root.is_dir():
        raise UserError(f"--root '{root}': not a folder (expected the {dataset} data set folder)")
    missing = [f for f in folders if not (root / f).is_dir()]
    if missing:
        raise UserError(
            f"--root '{root}' is not a {dataset} folder: expected {', '.join(f + '/' for f in folders)} "
            f"inside it (missing: {', '.join(f + '/' for f in missing)})"
        )


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _camera(value: int, cams: int, dataset: str, rel: str) -> int:
    if not 1 <= value <= cams:
        raise UserError(f"{dataset} file '{rel}': camera {value}: expected 1..{cams}")
    return value - 1


_MARKET_NAME = re.compile(r"^([-\d]+)_c(\d)")


def _market_like(root: Path, dataset: str, cams: int, example: str) -> list[SourceImage]:
    folders = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
    _require(root, dataset, list(folders))
    out: list[SourceImage] = []
    junk = distractors_dropped = 0
    for folder, split in folders.items():
        for path in _files(root / folder, (".jpg",)):
            rel = f"{folder}/{path.name}"
            m = _MARKET_NAME.match(path.name)
            if not m:
                raise UserError(f"{dataset} file '{rel}': expected a name like {example} (pid_c<camera>...)")
            pid = int(m[1])
            if pid == -1:
                junk += 1
                continue
            if pid < 0:
                raise UserError(f"{dataset} file '{rel}': pid {pid}: expected -1 (junk), 0 (distractor) or > 0")
            if pid == 0 and split != "gallery":
                # Distractors are gallery-only by the protocol; as a class or a query they mean nothing.
                distractors_dropped += 1
                continue
            out.append(SourceImage(path, rel, split, pid, _camera(int(m[2]), cams, dataset, rel), None))
    log.info("%s: %d images, %d junk (pid -1) dropped", dataset, len(out), junk)
    if distractors_dropped:
        log.info("%s: %d distractors (pid 0) outside the gallery dropped", dataset, distractors_dropped)
    return out


def market1501(root: Path) -> list[SourceImage]:
    return _market_like(root, "market1501", 6, "0002_c1s1_000451_03.jpg")


def dukemtmc(root: Path) -> list[SourceImage]:
    return _market_like(root, "dukemtmc", 8, "0005_c2_f0046985.jpg")


_PRCC_CAMERAS = {"A": 0, "B": 1, "C": 2}


def _prcc_clothes(pid: int, cam: str) -> str:
    # A and B show the same outfit, C another.
    return f"{pid}_{1 if cam in 'AB' else 2}"


def _pid_dirs(folder: Path, dataset: str, root: Path) -> list[tuple[int, Path]]:
    out = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not d.name.isdigit():
            raise UserError(f"{dataset} folder '{d.relative_to(root)}': expected identity folders named by pid (001)")
        out.append((int(d.name), d))
    return out


def prcc(root: Path) -> list[SourceImage]:
    """PRCC: `rgb/train/<pid>/<A|B|C>_*.jpg`; `rgb/test/<A|B|C>/<pid>/*.jpg`; `rgb/val` is not used."""
    _require(root, "prcc", ["rgb/train", "rgb/test/A", "rgb/test/B", "rgb/test/C"])
    out: list[SourceImage] = []
    for pid, pdir in _pid_dirs(root / "rgb/train", "prcc", root):
        for path in _files(pdir, (".jpg", ".jpeg", ".png")):
            rel = path.relative_to(root).as_posix()
            cam = path.name[0]
            if cam not in _PRCC_CAMERAS:
                raise UserError(f"prcc file '{rel}': expected a name starting with the camera A, B or C")
            out.append(SourceImage(path, rel, "train", pid, _PRCC_CAMERAS[cam], _prcc_clothes(pid, cam)))
    for cam, split in (("A", "gallery"), ("B", "query"), ("C", "query")):
        for pid, pdir in _pid_dirs(root / "rgb/test" / cam, "prcc", root):
            for path in _files(pdir, (".jpg", ".jpeg", ".png")):
                rel = path.relative_to(root).as_posix()
                out.append(SourceImage(path, rel, split, pid, _PRCC_CAMERAS[cam], _prcc_clothes(pid, cam)))
    if (root / "rgb/val").is_dir():
        log.info("prcc: rgb/val (validation identities) is not written; train uses rgb/train")
    return out


_LTCC_NAME = re.compile(r"^(\d+)_(\d+)_c(\d+)")


def ltcc(root: Path) -> list[SourceImage]:
    """LTCC (`LTCC_ReID/`): `{train,query,test}/*.png`, `<pid>_<clothes>_c<cam>_<frame>.png`; test = gallery."""
    folders = {"train": "train", "query": "query", "test": "gallery"}
    _require(root, "ltcc", list(folders))
    out = []
    for folder, split in folders.items():
        for path in _files(root / folder, (".png", ".jpg")):
            rel = f"{folder}/{path.name}"
            m = _LTCC_NAME.match(path.name)
            if not m:
                raise UserError(f"ltcc file '{rel}': expected a name like 001_1_c11_015850.png (pid_clothes_c<camera>)")
            pid = int(m[1])
            cam = _camera(int(m[3]), 12, "ltcc", rel)
            out.append(SourceImage(path, rel, split, pid, cam, f"{pid}_{int(m[2])}"))
    return out


_VC_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)-(\d+)")


def vcclothes(root: Path) -> list[SourceImage]:
    """VC-Clothes: `{train,query,gallery}/*.jpg`, `<pid>-<cam>-<clothes>-<frame>.jpg`."""
    folders = ["train", "query", "gallery"]
    _require(root, "vcclothes", folders)
    out = []
    for folder in folders:
        for path in _files(root / folder, (".jpg", ".png")):
            rel = f"{folder}/{path.name}"
            m = _VC_NAME.match(path.name)
            if not m:
                raise UserError(
                    f"vcclothes file '{rel}': expected a name like 0001-01-01-01.jpg (pid-cam-clothes-frame)"
                )
            pid = int(m[1])
            cam = _camera(int(m[2]), 4, "vcclothes", rel)
            out.append(SourceImage(path, rel, folder, pid, cam, f"{pid}_{int(m[3])}"))
    return out


LIST_FILES = {"train.txt": "train", "query.txt": "query", "gallery.txt": "gallery"}


def image_list(root: Path) -> list[SourceImage]:
    """Any data set: `train.txt`, `query.txt`, `gallery.txt` in root, lines `relative/path pid camid [clothes]`
    (camid 0-based, pid -1 dropped as junk, `#` comments)."""
    if not root.is_dir():
        raise UserError(f"--root '{root}': not a folder (expected one holding train.txt, query.txt, gallery.txt)")
    present = [name for name in LIST_FILES if (root / name).is_file()]
    if not present:
        raise UserError(f"--root '{root}': expected at least one of {', '.join(LIST_FILES)} inside it")
    out = []
    for name in present:
        for lineno, line in enumerate((root / name).read_text().splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            where = f"{root / name}:{lineno}"
            if len(fields) not in (3, 4):
                raise UserError(f"{where}: expected 'relative/path pid camid [clothes]', got {line.strip()!r}")
            try:
                pid, camid = int(fields[1]), int(fields[2])
            except ValueError:
                raise UserError(f"{where}: pid and camid: expected integers, got {fields[1]!r} {fields[2]!r}") from None
            if pid == -1:
                continue
            if pid < 0 or camid < 0:
                raise UserError(f"{where}: expected pid >= 0 (or -1 for junk) and a 0-based camid, got {pid} {camid}")
            rel = Path(fields[0]).as_posix()
            clothes = f"{pid}_{fields[3]}" if len(fields) == 4 else None
            out.append(SourceImage(root / rel, rel, LIST_FILES[name], pid, camid, clothes))
    return out


ADAPTERS: dict[str, Callable[[Path], list[SourceImage]]] = {
    "market1501": market1501,
    "dukemtmc": dukemtmc,
    "prcc": prcc,
    "ltcc": ltcc,
    "vcclothes": vcclothes,
    "list": image_list,
}


def scan(dataset: str, root: Path) -> list[SourceImage]:
    """The images of `root` read by the `dataset` adapter, in a stable order."""
    if dataset not in ADAPTERS:
        raise UserError(f"--dataset '{dataset}': expected one of {', '.join(ADAPTERS)}")
    images = ADAPTERS[dataset](Path(root))
    if not images:
        raise UserError(f"--root '{root}': no {dataset} images found")
    return images
