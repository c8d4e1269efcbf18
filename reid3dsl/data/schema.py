"""The shard sample format (docs/shard-format.md), owned here: encode, decode and validate one person crop.

A tar sample is `<key>.jpg` (RGB crop), optional `<key>.mask.png` (uint8, 0 background / 255 person, same
size as the crop), `<key>.kp.npy` (float32 (17, 3) COCO-17 keypoints: x, y in crop pixels, confidence; 0 =
missing) and `<key>.json` (`pid`, `camid`, `clothes`, `dataset`, `split`, `source`, and optionally `betas`,
the identity's true body shape where it is known). Writing a bad field is a `UserError` naming the sample key
and the field; reading one is a `SampleError`, which the reader counts and skips.
"""

from __future__ import annotations

import io
import json
import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from reid3dsl.errors import UserError

NUM_KEYPOINTS = 17
# Training identities; test identities' queries and gallery; validation identities' queries and gallery.
SPLITS = ("train", "query", "gallery", "val_query", "val_gallery")
META_FIELDS = ("pid", "camid", "clothes", "dataset", "split", "source", "betas")
MAX_BETAS = 300  # SMPL's full shape space
IMAGE_EXT = "jpg"
MASK_EXT = "mask.png"
KEYPOINTS_EXT = "kp.npy"
META_EXT = "json"
JPEG_QUALITY = 95


class SampleError(ValueError):
    """A stored sample that cannot be used (corrupt member, undecodable image, malformed json)."""


@dataclass(frozen=True)
class SampleMeta:
    """The `json` member: the data set's own labels of one crop."""

    pid: int
    camid: int
    clothes: str | None
    dataset: str
    split: str
    source: str
    betas: tuple[float, ...] | None = None  # the identity's true shape beta; None where unknown

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {
            "pid": self.pid,
            "camid": self.camid,
            "clothes": self.clothes,
            "dataset": self.dataset,
            "split": self.split,
            "source": self.source,
        }
        if self.betas is not None:
            obj["betas"] = list(self.betas)
        return json.dumps(obj, sort_keys=True).encode()


@dataclass
class Sample:
    """One decoded person crop.

    image: (H, W, 3) uint8 RGB; mask: (H, W) uint8 in {0, 255} or None; keypoints: (17, 3) float32.
    `jpeg` holds the original JPEG bytes when the source already was one (written as is, no re-encoding).
    """

    key: str
    image: np.ndarray
    keypoints: np.ndarray
    meta: SampleMeta
    mask: np.ndarray | None = None
    jpeg: bytes | None = None


def _field_error(key: str, field: str, value: Any, expected: str) -> SampleError:
    return SampleError(f"sample '{key}': json field '{field}' = {reprlib.repr(value)}: expected {expected}")


def check_meta(obj: Any, key: str) -> SampleMeta:
    """Validate the json fields of sample `key` → `SampleMeta`; a bad field raises `SampleError`."""
    if not isinstance(obj, Mapping):
        raise SampleError(f"sample '{key}': json: expected an object, got {type(obj).__name__}")
    for field in ("pid", "camid"):
        value = obj.get(field)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _field_error(key, field, value, "an integer")
    if obj["pid"] < 0:
        raise _field_error(key, "pid", obj["pid"], "an integer >= 0 (junk images, pid -1, are dropped)")
    if obj["camid"] < 0:
        raise _field_error(key, "camid", obj["camid"], "a 0-based camera index >= 0")
    clothes = obj.get("clothes")
    if clothes is not None and (not isinstance(clothes, str) or not clothes):
        raise _field_error(key, "clothes", clothes, "a non-empty string or null")
    for field in ("dataset", "source"):
        value = obj.get(field)
        if not isinstance(value, str) or not value:
            raise _field_error(key, field, value, "a non-empty string")
    if obj.get("split") not in SPLITS:
        raise _field_error(key, "split", obj.get("split"), "one of " + ", ".join(SPLITS))
    betas = obj.get("betas")
    if betas is not None and not _is_betas(betas):
        raise _field_error(key, "betas", betas, f"a list of 1 to {MAX_BETAS} finite numbers, or null")
    unknown = sorted(set(obj) - set(META_FIELDS))
    if unknown:
        raise SampleError(
            f"sample '{key}': json field '{unknown[0]}': unknown (expected only {', '.join(META_FIELDS)})"
        )
    return SampleMeta(obj["pid"], obj["camid"], clothes, obj["dataset"], obj["split"], obj["source"],
                      None if betas is None else tuple(float(b) for b in betas))


def _is_betas(value: Any) -> bool:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_BETAS:
        return False
    try:
        return all(isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(float(b)) for b in value)
    except OverflowError:  # an integer beyond float's range
        return False


def check_keypoints(kp: Any, key: str) -> np.ndarray:
    """(17, 3) finite keypoints with confidence in [0, 1] → float32 copy; otherwise `SampleError`."""
    arr = np.asarray(kp)
    if arr.shape != (NUM_KEYPOINTS, 3) or not np.issubdtype(arr.dtype, np.number):
        raise SampleError(f"sample '{key}': kp.npy: expected a ({NUM_KEYPOINTS}, 3) float array, got {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all() or (arr[:, 2] < 0).any() or (arr[:, 2] > 1).any():
        raise SampleError(f"sample '{key}': kp.npy: expected finite values and confidence in [0, 1]")
    return arr


def missing_keypoints() -> np.ndarray:
    """(17, 3) float32 zeros: every keypoint missing (confidence 0), nothing invented."""
    return np.zeros((NUM_KEYPOINTS, 3), np.float32)


def encode_image(image: np.ndarray, ext: str = ".jpg") -> bytes:
    """(H, W, 3) uint8 RGB or (H, W) uint8 → JPEG/PNG bytes."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ValueError(f"could not encode an image of shape {image.shape} as {ext}")
    return buf.tobytes()


def decode_image(data: bytes) -> np.ndarray | None:
    """JPEG/PNG bytes → (H, W, 3) uint8 RGB, or None when the bytes are not a decodable image."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if arr is None else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def encode_sample(sample: Sample) -> dict[str, Any]:
    """`Sample` → the dict `webdataset.ShardWriter.write` takes; a bad field is a one-line `UserError`."""
    try:
        if not sample.key or "." in sample.key:
            raise SampleError(f"sample key '{sample.key}': expected a non-empty key without '.'")
        meta = check_meta(json.loads(sample.meta.to_json()), sample.key)
        kp = check_keypoints(sample.keypoints, sample.key)
        image = sample.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SampleError(
                f"sample '{sample.key}': image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}"
            )
        out: dict[str, Any] = {
            "__key__": sample.key,
            IMAGE_EXT: sample.jpeg if sample.jpeg is not None else encode_image(image),
            KEYPOINTS_EXT: _npy_bytes(kp),
            META_EXT: meta.to_json(),
        }
        if sample.mask is not None:
            if sample.mask.shape != image.shape[:2]:
                raise SampleError(
                    f"sample '{sample.key}': mask: expected the crop's size {image.shape[:2]}, got {sample.mask.shape}"
                )
            out[MASK_EXT] = encode_image(np.where(sample.mask > 127, 255, 0).astype(np.uint8), ".png")
        return out
    except SampleError as err:
        raise UserError(str(err)) from None


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def decode_sample(raw: Mapping[str, Any]) -> Sample:
    """A raw tar sample (`__key__` + member bytes by extension) → `Sample`; anything wrong → `SampleError`."""
    key = raw.get("__key__") or "?"
    for ext in (IMAGE_EXT, KEYPOINTS_EXT, META_EXT):
        if not isinstance(raw.get(ext), bytes | bytearray):
            raise SampleError(f"sample '{key}': member '{ext}' missing (truncated or incomplete sample)")
    try:
        meta_obj = json.loads(raw[META_EXT])
    except (ValueError, UnicodeDecodeError):
        raise SampleError(f"sample '{key}': json: not valid JSON") from None
    meta = check_meta(meta_obj, key)
    try:
        kp = np.load(io.BytesIO(raw[KEYPOINTS_EXT]), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise SampleError(f"sample '{key}': kp.npy: not a readable .npy array") from None
    kp = check_keypoints(kp, key)
    image = decode_image(raw[IMAGE_EXT])
    if image is None:
        raise SampleError(f"sample '{key}': jpg: not a decodable image")
    mask = None
    if raw.get(MASK_EXT) is not None:
        mask = cv2.imdecode(np.frombuffer(raw[MASK_EXT], np.uint8), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise SampleError(f"sample '{key}': mask.png: not a decodable image")
        if mask.shape != image.shape[:2]:
            raise SampleError(f"sample '{key}': mask.png: size {mask.shape} differs from the crop's {image.shape[:2]}")
    return Sample(key=key, image=image, keypoints=kp, meta=meta, mask=mask)
