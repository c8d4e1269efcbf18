"""`shards synth`: the embedded cloth-changing ReID data set, rendered from the body model with pytorch3d.

The design (the project's science check: identity is shape, texture misleads):
- An identity is a body shape: beta (the stand-in's shape space spans stature, proportions, girth, ...)
  drawn far apart from the other identities (farthest-point sampling), kept in every image of it, plus a
  skin tone and hair colour from small shared palettes.
- Each identity wears `outfits` outfits: per-body-part colours (top, sleeves, bottom, shoes) and patterns
  (stripes, checks, colour blocks) painted on the mesh's vertices. Every second identity of a split
  wears, as its last outfit, the first outfit of the identity before it, so the same clothes on a
  different body is a hard negative.
- Each image: a pose from the stand-in prior's standing/walking sampler, any heading, one of 4 cameras
  (each with its own elevation, scene, light colour and exposure), a random window of that camera's
  scene as background, random light position and strength, framing jitter and sensor noise.
- Identities are split in half: train, and test; each test identity's outfit gives `images_per_outfit`
  // 4 (at least 1) query images on distinct cameras and the rest go to the gallery, so the standard
  (other camera), SC (same clothes, other camera) and CC (other clothes) protocols all have valid queries.
- Masks and keypoints come from the renderer (hard mask; COCO-17 keypoints projected, confidence 0
  outside the crop). Everything is drawn from `seed`: the same arguments give the same images.

`synthesize(...)` is idempotent (returns at once when `out_dir` holds a complete set made with the same
recipe) and safe when processes race (each builds in a temp folder, the first rename wins).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from reid3dsl.config import BodyConfig, StorageConfig
from reid3dsl.data.index import INDEX_NAME
from reid3dsl.data.schema import Sample, SampleMeta
from reid3dsl.data.writer import DatasetWriter
from reid3dsl.errors import UserError
from reid3dsl.log import progress

log = logging.getLogger(__name__)

SYNTH_VERSION = 1
RECIPE_NAME = "synth.json"
DATASET = "synth"
IMAGE_SIZE = (128, 64)  # (H, W): the demo's input size
NUM_CAMERAS = 4
SHARD_SIZE = 64
RENDER_BATCH = 32
BETA_SPREAD = 1.3  # identities are drawn from N(0, BETA_SPREAD^2 I) before farthest-point selection
BETA_CLIP = 2.5
CANDIDATES_PER_IDENTITY = 30

SKIN_TONES = ((0.96, 0.80, 0.69), (0.87, 0.68, 0.55), (0.76, 0.57, 0.42), (0.55, 0.38, 0.26), (0.36, 0.24, 0.16))
HAIR_COLOURS = ((0.08, 0.07, 0.06), (0.22, 0.14, 0.08), (0.45, 0.30, 0.16), (0.80, 0.66, 0.40), (0.60, 0.60, 0.58))
GARMENT_COLOURS = (
    (0.08, 0.08, 0.09), (0.92, 0.92, 0.90), (0.50, 0.50, 0.52), (0.10, 0.15, 0.40), (0.20, 0.40, 0.80),
    (0.80, 0.12, 0.12), (0.45, 0.08, 0.12), (0.15, 0.50, 0.20), (0.40, 0.42, 0.18), (0.76, 0.69, 0.50),
    (0.90, 0.85, 0.70), (0.40, 0.25, 0.12), (0.95, 0.80, 0.15), (0.95, 0.50, 0.10), (0.95, 0.60, 0.70),
    (0.45, 0.20, 0.60), (0.30, 0.70, 0.75),
)  # fmt: skip
TOP_PATTERNS = ("solid", "solid", "hstripes", "vstripes", "checks", "block")
BOTTOM_PATTERNS = ("solid", "solid", "solid", "hstripes")

# Skin/garment regions of the mesh (from the body model's 10 parts, split further in the rest pose).
SKIN, HAIR, TOP, BOTTOM, SHOES, FOREARM, LOWER_LEG = range(7)


@dataclass(frozen=True)
class Outfit:
    """Per-part colours and patterns of one set of clothes."""

    top: tuple[float, float, float]
    top2: tuple[float, float, float]
    top_pattern: str
    long_sleeves: bool
    bottom: tuple[float, float, float]
    bottom2: tuple[float, float, float]
    bottom_pattern: str
    long_legs: bool
    shoes: tuple[float, float, float]
    period: float  # stripe/check period in metres


@dataclass(frozen=True)
class Identity:
    pid: int
    split: str  # "train" or "test"
    betas: tuple[float, ...]
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    outfits: tuple[int, ...]  # indices into the outfit list (shared outfits appear under several pids)


@dataclass(frozen=True)
class Shot:
    pid: int
    outfit: int  # the identity's outfit slot (its clothes label is f"{pid}_{outfit}")
    camera: int
    split: str  # "train", "query" or "gallery"
    index: int


@dataclass(frozen=True)
class Camera:
    pitch_deg: float
    tint: tuple[float, float, float]
    exposure: float
    scene_seed: int


def _colour(rng: np.random.Generator, palette: tuple[tuple[float, float, float], ...]) -> tuple[float, float, float]:
    base = np.array(palette[int(rng.integers(len(palette)))])
    return tuple(float(c) for c in np.clip(base * rng.uniform(0.85, 1.15) + rng.normal(0, 0.03, 3), 0, 1))


def _outfit(rng: np.random.Generator) -> Outfit:
    top, top2 = _colour(rng, GARMENT_COLOURS), _colour(rng, GARMENT_COLOURS)
    bottom, bottom2 = _colour(rng, GARMENT_COLOURS), _colour(rng, GARMENT_COLOURS)
    return Outfit(
        top=top,
        top2=top2,
        top_pattern=str(rng.choice(TOP_PATTERNS)),
        long_sleeves=bool(rng.random() < 0.6),
        bottom=bottom,
        bottom2=bottom2,
        bottom_pattern=str(rng.choice(BOTTOM_PATTERNS)),
        long_legs=bool(rng.random() < 0.75),
        shoes=_colour(rng, GARMENT_COLOURS[:4] + GARMENT_COLOURS[11:12]),
        period=float(rng.uniform(0.09, 0.16)),
    )


def _farthest_betas(rng: np.random.Generator, n: int, num_betas: int) -> np.ndarray:
    """n shapes spread out in beta space: farthest-point selection among random candidates → (n, NB)."""
    cand = np.clip(rng.normal(0, BETA_SPREAD, (CANDIDATES_PER_IDENTITY * n, num_betas)), -BETA_CLIP, BETA_CLIP)
    chosen = [int(np.argmin(np.linalg.norm(cand, axis=1)))]  # start near the mean body
    dist = np.linalg.norm(cand - cand[chosen[0]], axis=1)
    for _ in range(n - 1):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(cand - cand[chosen[-1]], axis=1))
    return cand[rng.permutation(chosen)]


@dataclass(frozen=True)
class Plan:
    """Everything about the data set except the pixels: identities, outfits, shots, cameras."""

    people: tuple[Identity, ...]
    outfits: tuple[Outfit, ...]
    shots: tuple[Shot, ...]
    cameras: tuple[Camera, ...]

    def person(self, pid: int) -> Identity:
        return self.people[pid - 1]


def design(identities: int, outfits: int, images_per_outfit: int, seed: int, num_betas: int) -> Plan:
    """The data set's plan (no rendering), all drawn from `seed`."""
    if identities < 2 or outfits < 1 or images_per_outfit < 2:
        raise UserError(
            f"synth: {identities} identities x {outfits} outfits x {images_per_outfit} images: expected at least "
            "2 identities (train and test), 1 outfit and 2 images per outfit"
        )
    rng = np.random.default_rng([seed, 0])
    betas = _farthest_betas(rng, identities, num_betas)
    n_train = (identities + 1) // 2
    outfit_list: list[Outfit] = []
    people: list[Identity] = []
    for i in range(identities):
        split = "train" if i < n_train else "test"
        first_of_split = i in (0, n_train)
        slots = []
        for o in range(outfits):
            # Every second identity of a split wears the previous identity's first outfit as its last one.
            odd = (i - (0 if split == "train" else n_train)) % 2 == 1
            if o == outfits - 1 and o > 0 and odd and not first_of_split:
                slots.append(people[-1].outfits[0])
            else:
                outfit_list.append(_outfit(rng))
                slots.append(len(outfit_list) - 1)
        people.append(
            Identity(
                i + 1,
                split,
                tuple(float(b) for b in betas[i]),
                _colour(rng, SKIN_TONES),
                _colour(rng, HAIR_COLOURS),
                tuple(slots),
            )
        )
    cameras = [
        Camera(
            pitch_deg=float(pitch),
            tint=tuple(float(t) for t in np.clip(1 + rng.normal(0, 0.08, 3), 0.8, 1.2)),
            exposure=float(rng.uniform(0.85, 1.15)),
            scene_seed=int(rng.integers(2**31)),
        )
        for pitch in rng.permutation([3.0, 9.0, 15.0, 21.0])
    ]
    shots: list[Shot] = []
    queries = max(1, images_per_outfit // 4)
    for person in people:
        for o in range(outfits):
            start = int(rng.integers(NUM_CAMERAS))
            for j in range(images_per_outfit):
                camera = (start + j) % NUM_CAMERAS
                split = person.split if person.split == "train" else ("query" if j < queries else "gallery")
                shots.append(Shot(person.pid, o, camera, split, len(shots)))
    if outfits == 1:
        log.warning("synth: one outfit per identity — the clothes-changing (CC) protocol has no valid query")
    return Plan(tuple(people), tuple(outfit_list), tuple(shots), tuple(cameras))


def _regions(rest: np.ndarray, joints: np.ndarray, keypoints: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    """Region of each vertex (SKIN, HAIR, TOP, ...) from the 10 body parts and the rest pose (T-pose):
    rest (V, 3), joints (24, 3), keypoints (17, 3) → (V,) int."""
    from reid3dsl.body.constants import JOINT

    head, torso, lua, lfa, rua, rfa, lth, lll, rth, rll = parts
    region = np.full(len(rest), SKIN)
    y, z = rest[:, 1], rest[:, 2]
    waist = 0.5 * (joints[JOINT["pelvis"], 1] + joints[JOINT["spine1"], 1])
    region[torso] = np.where(y[torso] < waist, BOTTOM, TOP)
    region[np.concatenate([lua, rua])] = TOP
    for fore, wrist in ((lfa, JOINT["left_wrist"]), (rfa, JOINT["right_wrist"])):
        hand = np.abs(rest[fore, 0]) > abs(joints[wrist, 0]) - 0.02
        region[fore] = np.where(hand, SKIN, FOREARM)
    region[np.concatenate([lth, rth])] = BOTTOM
    for lower, ankle in ((lll, JOINT["left_ankle"]), (rll, JOINT["right_ankle"])):
        region[lower] = np.where(y[lower] < joints[ankle, 1] + 0.04, SHOES, LOWER_LEG)
    eyes = keypoints[1:3, 1].mean()
    head_centre_z = rest[head, 2].mean()
    hair = (y[head] > eyes + 0.025) | ((z[head] < head_centre_z - 0.01) & (y[head] > keypoints[3:5, 1].mean() - 0.06))
    region[head] = np.where(hair, HAIR, SKIN)
    return region


def _pattern(kind: str, rest: np.ndarray, arm: np.ndarray, period: float) -> np.ndarray:
    """Second-colour weight in [0, 1] of each vertex for a pattern (rings run around the body and limbs)."""
    axial = np.where(arm, np.abs(rest[:, 0]), rest[:, 1])  # along the limb (arms lie along x in the T-pose)
    around = np.where(arm, np.arctan2(rest[:, 1] - 0.54, rest[:, 2]), np.arctan2(rest[:, 0], rest[:, 2]))
    ring = np.sin(2 * math.pi * axial / period) > 0
    column = np.sin(6 * around) > 0
    if kind == "hstripes":
        return ring.astype(np.float64)
    if kind == "vstripes":
        return column.astype(np.float64)
    if kind == "checks":
        return (ring ^ column).astype(np.float64)
    if kind == "block":  # a yoke: shoulders and sleeves in the second colour
        return ((rest[:, 1] > 0.42) | arm).astype(np.float64)
    return np.zeros(len(rest))


def _vertex_colours(person: Identity, outfit: Outfit, region: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Per-vertex RGB (V, 3) in [0, 1] of `person` wearing `outfit`."""
    arm = np.abs(rest[:, 0]) > 0.2
    colours = np.tile(np.array(person.skin), (len(rest), 1))
    colours[region == HAIR] = person.hair
    top_mix = _pattern(outfit.top_pattern, rest, arm, outfit.period)[:, None]
    top = (1 - top_mix) * np.array(outfit.top) + top_mix * np.array(outfit.top2)
    bottom_mix = _pattern(outfit.bottom_pattern, rest, arm, outfit.period * 1.5)[:, None]
    bottom = (1 - bottom_mix) * np.array(outfit.bottom) + bottom_mix * np.array(outfit.bottom2)
    is_top = (region == TOP) | ((region == FOREARM) & outfit.long_sleeves)
    is_bottom = (region == BOTTOM) | ((region == LOWER_LEG) & outfit.long_legs)
    colours[is_top] = top[is_top]
    colours[is_bottom] = bottom[is_bottom]
    colours[region == SHOES] = outfit.shoes
    return colours


SCENE_COLOURS = (
    (0.55, 0.55, 0.52), (0.62, 0.58, 0.50), (0.52, 0.32, 0.26), (0.42, 0.44, 0.46), (0.70, 0.68, 0.62),
    (0.30, 0.38, 0.42), (0.38, 0.42, 0.30), (0.22, 0.22, 0.24), (0.66, 0.60, 0.52), (0.48, 0.40, 0.34),
)  # fmt: skip  # concrete, sandstone, brick, asphalt, plaster, glass, hedge, shadow, stone, wood


def _scene(camera: Camera, height: int, width: int) -> np.ndarray:
    """A camera's fixed scene (height, width, 3) float in [0, 1]: a wall with fixtures over a paved floor;
    each shot of that camera shows a random window of it."""
    rng = np.random.default_rng(camera.scene_seed)
    wall, floor = (np.array(_colour(rng, SCENE_COLOURS)) for _ in range(2))
    horizon = int(height * rng.uniform(0.55, 0.72))
    img = np.empty((height, width, 3))
    img[:horizon] = wall
    img[horizon:] = floor * 0.9
    for _ in range(int(rng.integers(5, 10))):  # windows, doors, pillars, shop fronts
        w, h = int(rng.integers(6, 40)), int(rng.integers(10, horizon))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, max(1, horizon - h // 2)))
        img[y : y + h, x : x + w] = np.clip(np.array(_colour(rng, SCENE_COLOURS)) * rng.uniform(0.6, 1.2), 0, 1)
    for y in range(horizon + 6, height, int(rng.integers(8, 16))):  # paving joints
        img[y : y + 1, :] *= 0.8
    shade = np.linspace(1.0, rng.uniform(0.7, 1.1), height)[:, None, None]
    grain = rng.normal(0, 0.02, (height, width, 1))
    return cv2.GaussianBlur(np.clip(img * shade + grain, 0, 1).astype(np.float32), (3, 3), 0.8).astype(np.float64)


def _rotation_x(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]])


def _batches(items: list[Shot], size: int) -> Iterator[list[Shot]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _recipe(identities: int, outfits: int, images_per_outfit: int, seed: int, body_cfg: BodyConfig) -> dict:
    return {
        "version": SYNTH_VERSION,
        "identities": identities,
        "outfits": outfits,
        "images_per_outfit": images_per_outfit,
        "seed": seed,
        "body": {
            "model_path": body_cfg.model_path,
            "standin_resolution": body_cfg.standin_resolution,
            "standin_seed": body_cfg.standin_seed,
            "num_betas": body_cfg.num_betas,
            "focal_length": body_cfg.focal_length,
            "focal_res": body_cfg.focal_res,
        },
    }


def _complete(out_dir: Path, recipe: dict) -> bool:
    try:
        return (out_dir / INDEX_NAME).is_file() and json.loads((out_dir / RECIPE_NAME).read_text()) == recipe
    except (OSError, ValueError):
        return False


class ShotRenderer:
    """Renders shots of a `Plan` with the body model of `body_cfg` (pytorch3d, through reid3dsl.body.render)."""

    def __init__(self, plan: Plan, body_cfg: BodyConfig) -> None:
        from reid3dsl.body.prior import StandinPrior
        from reid3dsl.body.render import TexturedRenderer
        from reid3dsl.body.smpld import load_body_model

        self.plan = plan
        self.model = load_body_model(body_cfg)
        # Pedestrians: the stand-in prior's standing/walking sampler, whatever prior training uses.
        self.prior = StandinPrior(self.model.num_betas)
        self.renderer = TexturedRenderer(body_cfg)
        h, w = IMAGE_SIZE
        # The rest pose (T-pose of the mean body) fixes where garments and patterns sit on the mesh.
        rest_out = self.model(torch.zeros(1, self.model.num_betas), torch.eye(3).expand(1, 24, 3, 3))
        rest = rest_out.vertices[0].numpy().astype(np.float64)
        parts = [g.numpy() for g in self.model.part_vertex_groups(10)]
        region = _regions(rest, rest_out.joints[0].numpy(), rest_out.keypoints[0].numpy(), parts)
        self.colours = {
            (p.pid, o): torch.from_numpy(_vertex_colours(p, plan.outfits[slot], region, rest)).float()
            for p in plan.people
            for o, slot in enumerate(p.outfits)
        }
        self.scenes = [_scene(c, 2 * h, 4 * w) for c in plan.cameras]

    def sample_poses(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n standing/walking body poses (n, 24, 3, 3); the global orientation is set per shot by `render`."""
        return self.prior.sample(n, generator)[0]

    def render(self, shots: list[Shot], poses: torch.Tensor, rng: np.random.Generator) -> list[Sample]:
        """Shots with body poses (n, 24, 3, 3) → samples (heading, framing, light, background from `rng`)."""
        from pytorch3d.transforms import axis_angle_to_matrix

        from reid3dsl.body.constants import UPRIGHT_FACING_CAMERA

        plan, h, w, n = self.plan, IMAGE_SIZE[0], IMAGE_SIZE[1], len(shots)
        cameras = [plan.cameras[s.camera] for s in shots]
        heading = torch.from_numpy(rng.uniform(0, 2 * math.pi, n)).float()
        yaw = axis_angle_to_matrix(heading[:, None] * torch.tensor([0.0, 1.0, 0.0]))
        # A camera looking down by theta sees the body's up axis tilted towards it: a rotation about x by +theta.
        pitch = torch.stack([_rotation_x(c.pitch_deg) for c in cameras])
        pose = poses.clone()
        pose[:, 0] = pitch @ torch.tensor(UPRIGHT_FACING_CAMERA) @ yaw
        betas = torch.tensor([plan.person(s.pid).betas for s in shots], dtype=torch.float32)
        body = self.model(betas, pose)
        verts = body.vertices
        # Frame each person like a detector crop: the body fills 80-92 % of the height, small offsets.
        focal = self.renderer.focal
        lo, hi = verts.min(dim=1).values, verts.max(dim=1).values
        fill = torch.from_numpy(rng.uniform(0.80, 0.92, n)).float()
        z = focal * (hi[:, 1] - lo[:, 1]) / (2 * fill)
        shift = torch.from_numpy(rng.uniform(-1, 1, (n, 2)) * [0.05 * w, 0.03 * h]).float()
        centre = (lo + hi) / 2
        cam_t = torch.stack(
            [-centre[:, 0] + shift[:, 0] * 2 * z / (h * focal), -centre[:, 1] + shift[:, 1] * 2 * z / (h * focal), z], 1
        )
        tint = torch.tensor([c.tint for c in cameras])
        light = (
            torch.from_numpy(
                np.stack([rng.uniform(-0.6, 0.6, n), rng.uniform(-0.8, -0.2, n), rng.uniform(0.3, 0.7, n)], 1)
            ).float()
            * z[:, None]
        )  # camera coordinates: beside, above and in front of the person
        ambient = torch.from_numpy(rng.uniform(0.35, 0.55, (n, 1))).float() * tint
        diffuse = torch.from_numpy(rng.uniform(0.45, 0.7, (n, 1))).float() * tint
        colours = torch.stack([self.colours[(s.pid, s.outfit)] for s in shots])
        out = self.renderer.render(
            verts, self.model.faces, colours, cam_t, IMAGE_SIZE, keypoints=body.keypoints, light_location=light,
            ambient=ambient, diffuse=diffuse,
        )  # fmt: skip
        samples = []
        for i, shot in enumerate(shots):
            cam, scene, mask = cameras[i], self.scenes[shot.camera], out.mask[i].numpy()
            y0 = int(rng.integers(0, scene.shape[0] - h + 1))
            x0 = int(rng.integers(0, scene.shape[1] - w + 1))
            background = scene[y0 : y0 + h, x0 : x0 + w] * np.array(cam.tint)
            image = np.where(mask[..., None], out.rgb[i].numpy(), background) * cam.exposure * rng.uniform(0.9, 1.1)
            image = cv2.GaussianBlur(image.astype(np.float32), (3, 3), 0.6)  # optics: no razor-sharp edges
            image = image + rng.normal(0, rng.uniform(0.005, 0.03), image.shape)  # sensor noise
            kp = out.keypoints[i].numpy().astype(np.float32)
            kp[kp[:, 2] == 0, :2] = 0.0
            meta = SampleMeta(
                shot.pid, shot.camera, f"{shot.pid}_{shot.outfit}", DATASET, shot.split, f"synth/{shot.index:06d}"
            )
            key = f"{shot.split}/{shot.pid:04d}_c{shot.camera}_o{shot.outfit}_{shot.index:06d}"
            pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
            samples.append(Sample(key, pixels, kp, meta, np.where(mask, 255, 0).astype(np.uint8)))
        return samples


class _Worker:
    """Per-process renderer for `synthesize` (pytorch3d's CPU rasteriser runs on one core: processes scale)."""

    renderer: ShotRenderer
    seed: int

    @classmethod
    def setup(cls, plan: Plan, body_cfg: BodyConfig, seed: int, threads: int | None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        cls.renderer = ShotRenderer(plan, body_cfg)
        cls.seed = seed

    @classmethod
    def render(cls, job: tuple[int, list[Shot]]) -> list[Sample]:
        """Batch number b → its samples; the randomness of batch b depends on (seed, b) only, so the set is
        the same whatever the number of processes."""
        b, shots = job
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([cls.seed, 2, b]).generate_state(1)[0]))
        rng = np.random.default_rng([cls.seed, 1, b])
        return cls.renderer.render(shots, cls.renderer.sample_poses(len(shots), generator), rng)


def _processes() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def synthesize(
    out_dir: str | Path,
    identities: int,
    outfits: int,
    images_per_outfit: int,
    seed: int,
    body_cfg: BodyConfig,
    processes: int | None = None,
) -> Path:
    """Render the cloth-changing set into `out_dir` (the data set folder: index.json and shards go there);
    returns `out_dir`. Returns at once when `out_dir` already holds this recipe's complete set. Renders in
    `processes` processes (default: one per available core); the images do not depend on that number."""
    out = Path(out_dir)
    recipe = _recipe(identities, outfits, images_per_outfit, seed, body_cfg)
    if _complete(out, recipe):
        log.info("synth: %s is complete, nothing to do", out)
        return out
    plan = design(identities, outfits, images_per_outfit, seed, body_cfg.num_betas)
    # Shards must mix identities (a reader holding a few shards still sees many identities for P x K
    # batches): shots are written in a seeded random order.
    order = [plan.shots[i] for i in np.random.default_rng([seed, 3]).permutation(len(plan.shots))]
    jobs = list(enumerate(_batches(order, RENDER_BATCH)))
    processes = min(processes or _processes(), len(jobs))
    log.info("synth: rendering %d images in %d process(es) into %s", len(plan.shots), processes, out)
    try:
        with DatasetWriter(str(out), DATASET, StorageConfig(), shard_size=SHARD_SIZE, replace=out.exists()) as writer:
            if processes == 1:
                _Worker.setup(plan, body_cfg, seed, None)
                results = map(_Worker.render, jobs)
                _write(writer, progress(results, "synth", total=len(jobs), unit="batch"))
            else:
                _prepare_body(body_cfg)
                ctx = multiprocessing.get_context("fork")
                with ctx.Pool(processes, initializer=_Worker.setup, initargs=(plan, body_cfg, seed, 1)) as pool:
                    _write(writer, progress(pool.imap(_Worker.render, jobs), "synth", total=len(jobs), unit="batch"))
            writer.add_file(RECIPE_NAME, json.dumps(recipe, indent=1, sort_keys=True).encode())
    except FileExistsError:
        if _complete(out, recipe):  # another process finished the same set first
            return out
        raise UserError(f"synth: '{out}' was written by another process with another recipe meanwhile") from None
    return out


def _prepare_body(body_cfg: BodyConfig) -> None:
    """Load the body model once before forking, so a missing stand-in is generated once, not per process."""
    from reid3dsl.body.smpld import load_body_model

    load_body_model(body_cfg)


def _write(writer: DatasetWriter, batches: Iterable[list[Sample]]) -> None:
    for samples in batches:
        for sample in samples:
            writer.write(sample)
