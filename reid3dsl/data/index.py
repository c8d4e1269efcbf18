"""A data set's `index.json`: what `shards build`/`synth` wrote and what training and evaluation read first.

The file sits at `<root>/index.json` (local folder or s3:// prefix) and lists, per split, the shards (name
relative to the root and sample count), the sample count, identities, cameras and clothes, plus how many
source images the build skipped. `DatasetIndex` adds the maps the trainer needs: training pid → class index
(`num_classes`) and clothes string → int. Shard names must be plain relative names, so an index from
elsewhere cannot point a reader at a URL scheme such as `pipe:`, an absolute path or a parent folder.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reid3dsl.config import PLAIN_NAME_RULE, StorageConfig, is_plain_name
from reid3dsl.data.s3 import join_url, read_bytes
from reid3dsl.data.schema import SPLITS
from reid3dsl.errors import UserError

INDEX_NAME = "index.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShardInfo:
    """One shard: its full URL (local path or s3://) and how many samples it holds (None: unknown)."""

    url: str
    count: int | None


@dataclass(frozen=True)
class SplitIndex:
    """One split of a data set."""

    shards: tuple[ShardInfo, ...]
    count: int
    identities: tuple[int, ...]
    cameras: tuple[int, ...]
    clothes: tuple[str, ...]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.shards]


@dataclass(frozen=True)
class DatasetIndex:
    """A data set's index: splits, counts, and the label maps derived from them."""

    root: str
    dataset: str
    splits: Mapping[str, SplitIndex]
    with_masks: int = 0
    with_keypoints: int = 0
    skipped: int = 0
    skipped_examples: tuple[str, ...] = field(default_factory=tuple)

    def split(self, name: str) -> SplitIndex:
        if name not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise UserError(f"data set '{self.root}': no '{name}' split (it has: {have})")
        return self.splits[name]

    @property
    def pid_to_class(self) -> dict[int, int]:
        """Training pid → class index 0..C-1 (pids sorted)."""
        return {pid: i for i, pid in enumerate(self.split("train").identities)}

    @property
    def num_classes(self) -> int:
        return len(self.split("train").identities)

    @property
    def clothes_to_index(self) -> dict[str, int]:
        """Clothes string → int over all splits (sorted, so every process builds the same map)."""
        names = sorted({c for s in self.splits.values() for c in s.clothes})
        return {name: i for i, name in enumerate(names)}

    @property
    def cameras(self) -> tuple[int, ...]:
        return tuple(sorted({c for s in self.splits.values() for c in s.cameras}))

    @property
    def has_masks(self) -> bool:
        return self.with_masks > 0


def index_to_json(
    dataset: str,
    splits: Mapping[str, Mapping[str, Any]],
    with_masks: int,
    with_keypoints: int,
    skipped: int,
    skipped_examples: list[str],
) -> bytes:
    """The index.json document (shard names relative to the data set root)."""
    doc = {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "with_masks": with_masks,
        "with_keypoints": with_keypoints,
        "skipped": skipped,
        "skipped_examples": skipped_examples,
        "splits": dict(splits),
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def _expect(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise UserError(f"{where}: expected {what}")


def _shard_name(name: Any, where: str) -> str:
    """`name` if it is a relative path of plain names (`sub/train-000000.tar`), else a UserError at `where`."""
    if not isinstance(name, str) or not all(is_plain_name(part) for part in name.split("/")):
        raise UserError(
            f"{where}: shard name {reprlib.repr(name)}: expected a plain name relative to the data set folder "
            f"(parts of {PLAIN_NAME_RULE}; no URL scheme, absolute path or '..')"
        )
    return name


def parse_index(doc: Any, root: str) -> DatasetIndex:
    """A parsed index.json → `DatasetIndex` with shard URLs resolved against `root`."""
    where = join_url(root, INDEX_NAME)
    _expect(isinstance(doc, dict), where, "a JSON object")
    _expect(doc.get("format") == FORMAT_VERSION, f"{where} field 'format'", f"{FORMAT_VERSION}")
    _expect(isinstance(doc.get("dataset"), str), f"{where} field 'dataset'", "a string")
    raw_splits = doc.get("splits")
    _expect(isinstance(raw_splits, dict) and raw_splits, f"{where} field 'splits'", "a non-empty object")
    splits: dict[str, SplitIndex] = {}
    for name, raw in raw_splits.items():
        at = f"{where} field 'splits.{name}'"
        _expect(name in SPLITS, at, "a split named " + ", ".join(SPLITS))
        _expect(isinstance(raw, dict), at, "an object")
        try:
            shards = tuple(ShardInfo(join_url(root, _shard_name(s["name"], at)), int(s["count"]))
                           for s in raw["shards"])
            splits[name] = SplitIndex(
                shards=shards,
                count=int(raw["count"]),
                identities=tuple(int(p) for p in raw["identities"]),
                cameras=tuple(int(c) for c in raw["cameras"]),
                clothes=tuple(str(c) for c in raw["clothes"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{at}: expected shards/count/identities/cameras/clothes ({err!r})") from None
    return DatasetIndex(
        root=root,
        dataset=doc["dataset"],
        splits={name: splits[name] for name in SPLITS if name in splits},
        with_masks=int(doc.get("with_masks", 0)),
        with_keypoints=int(doc.get("with_keypoints", 0)),
        skipped=int(doc.get("skipped", 0)),
        skipped_examples=tuple(doc.get("skipped_examples", ())),
    )


def load_index(root: str, storage: StorageConfig) -> DatasetIndex:
    """Read `<root>/index.json` (local or s3://) → `DatasetIndex`; missing or malformed → one-line UserError."""
    url = join_url(root, INDEX_NAME)
    try:
        data = read_bytes(url, storage)
    except FileNotFoundError:
        raise UserError(
            f"data set '{root}': no {INDEX_NAME} (expected a folder written by `python -m shards build` or "
            "`python -m shards synth`)"
        ) from None
    except Exception as err:
        raise UserError(f"data set index '{url}': could not be read ({type(err).__name__}: {err})") from None
    try:
        doc = json.loads(data)
    except ValueError:
        raise UserError(f"data set index '{url}': not valid JSON") from None
    return parse_index(doc, root)
