"""The shard sample format (docs/shard-format.md), owned here: encode, decode and validate one person crop.

A tar sample is `<key>.jpg` (RGB crop), optional `<key>.mask.png` (uint8, 0 background / 255 person, same
size as the crop), `<key>.kp.npy` (float32 (17, 3) COCO-17 keypoints: x, y in crop pixels, confidence; 0 =
missing) and `<key>.json` (`pid`, `camid`, `clothes`, `dataset`, `split`, `source`, and optionally `betas`,
the identity's true body shape where it is known). Writing a bad field is a `UserError` naming the sample key
and the field; reading one is a `SampleError`, which the reader counts and skips.

Shards are untrusted input: before anything is decoded, image headers are checked for their format and size
(`max_side`), the kp.npy header for shape and dtype, and every member's byte size is bounded (`member_limit`);
ids must fit 32 bits and text labels be printable.
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
from numpy.lib import format as npy_format
from PIL import Image

from reid3dsl import MAX_IMAGE_SIDE
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
# What each image member must be, as PIL names the format it reads from the header.
IMAGE_FORMATS = {IMAGE_EXT: "JPEG", MASK_EXT: "PNG"}
MAX_ID = 2**31 - 1  # pid and camid become 32-bit tensors and indices downstream
# Bytes a json (300 betas are under 10 KB) or a kp.npy (under 1 KB) ever needs.
MAX_SMALL_MEMBER = 1 << 16


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
        if value > MAX_ID:
            raise _field_error(key, field, value, f"at most {MAX_ID} (a 32-bit id)")
    if obj["pid"] < 0:
        raise _field_error(key, "pid", obj["pid"], "an integer >= 0 (junk images, pid -1, are dropped)")
    if obj["camid"] < 0:
        raise _field_error(key, "camid", obj["camid"], "a 0-based camera index >= 0")
    clothes = obj.get("clothes")
    if clothes is not None and not _is_text(clothes):
        raise _field_error(key, "clothes", clothes, "a non-empty printable string or null")
    for field in ("dataset", "source"):
        value = obj.get(field)
        if not _is_text(value):
            raise _field_error(key, field, value, "a non-empty printable string")
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


def _is_text(value: Any) -> bool:
    # Labels end up in logs and drawn captions: cv2.putText crashes the process on a lone surrogate.
    return isinstance(value, str) and bool(value) and value.isprintable()


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
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # beyond OpenCV's pixel cap (see reid3dsl/__init__.py)
        return None
    return None if arr is None else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def member_limit(ext: str | None, max_side: int = MAX_IMAGE_SIDE) -> int:
    """The most bytes a shard member with extension `ext` may hold: an image never needs more than its pixels
    uncompressed (3 bytes each, for a side of at most `max_side`) plus headers; anything else is small."""
    return 3 * max_side**2 + MAX_SMALL_MEMBER if ext in IMAGE_FORMATS else MAX_SMALL_MEMBER


def _check_image_header(data: bytes, ext: str, key: str, max_side: int) -> None:
    """Refuse an image member that is not in its format or whose header claims a side over `max_side`, before it
    is decoded: a few KB of JPEG or PNG can claim gigabytes of pixels. PIL reads only the header here."""
    fmt = IMAGE_FORMATS[ext]
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:
            width, height = img.size
    except Exception as err:  # PIL raises many kinds for a bad header, DecompressionBombError among them
        raise SampleError(f"sample '{key}': {ext}: not a readable {fmt} header ({type(err).__name__}: {err})") from None
    if max(width, height) > max_side:
        raise SampleError(
            f"sample '{key}': {ext}: header says {width}x{height} pixels: expected at most {max_side} a side "
            "(data.max_image_side)"
        )


def _read_keypoints(data: bytes, key: str) -> np.ndarray:
    """kp.npy bytes → array; its header is checked first, because numpy allocates whatever shape it claims."""
    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        read_header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}[version]
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, KeyError, EOFError, OSError):
        raise SampleError(f"sample '{key}': kp.npy: not a readable .npy header") from None
    if shape != (NUM_KEYPOINTS, 3) or dtype.kind not in "fiu":
        raise SampleError(
            f"sample '{key}': kp.npy: header says shape {reprlib.repr(shape)} dtype {dtype}: expected a "
            f"({NUM_KEYPOINTS}, 3) float array"
        )
    try:  # the data right after the header (np.load would parse the header a second time)
        flat = np.frombuffer(data, dtype, count=NUM_KEYPOINTS * 3, offset=stream.tell())
    except ValueError:
        raise SampleError(f"sample '{key}': kp.npy: shorter than its header says") from None
    return flat.reshape(shape, order="F" if fortran_order else "C")


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


def decode_sample(raw: Mapping[str, Any], max_side: int = MAX_IMAGE_SIDE) -> Sample:
    """A raw tar sample (`__key__` + member bytes by extension) → `Sample`; anything wrong → `SampleError`.
    Images and mask with a side over `max_side` are refused from their headers, before decoding."""
    key = raw.get("__key__") or "?"
    for ext in (IMAGE_EXT, KEYPOINTS_EXT, META_EXT):
        if not isinstance(raw.get(ext), bytes | bytearray):
            raise SampleError(f"sample '{key}': member '{ext}' missing (truncated or incomplete sample)")
    try:
        meta_obj = json.loads(raw[META_EXT])
    except RecursionError:  # the interpreter's recursion limit is what bounds the parser's nesting depth
        raise SampleError(f"sample '{key}': json: nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise SampleError(f"sample '{key}': json: not valid JSON") from None
    meta = check_meta(meta_obj, key)
    kp = check_keypoints(_read_keypoints(raw[KEYPOINTS_EXT], key), key)
    _check_image_header(raw[IMAGE_EXT], IMAGE_EXT, key, max_side)
    image = decode_image(raw[IMAGE_EXT])
    if image is None:
        raise SampleError(f"sample '{key}': jpg: not a decodable image")
    mask = None
    if raw.get(MASK_EXT) is not None:
        _check_image_header(raw[MASK_EXT], MASK_EXT, key, max_side)
        mask = cv2.imdecode(np.frombuffer(raw[MASK_EXT], np.uint8), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise SampleError(f"sample '{key}': mask.png: not a decodable image")
        if mask.shape != image.shape[:2]:
            raise SampleError(f"sample '{key}': mask.png: size {mask.shape} differs from the crop's {image.shape[:2]}")
    return Sample(key=key, image=image, keypoints=kp, meta=meta, mask=mask)
