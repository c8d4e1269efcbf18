"""The embedded set's plan, everything but the pixels: the recipe, identities (body shape, skin, hair, outfits)
in three identity splits (train, validation, test), outfits (per-part colours and patterns), cameras and shots,
all drawn from the recipe's seed."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from reid3dsl.config import DataConfig
from reid3dsl.errors import UserError

log = logging.getLogger(__name__)

DATASET = "synth"
NUM_CAMERAS = 4
# Identities are a population, beta ~ N(0, I) in the body model's shape space. The stand-in's shape space is
# the principal components of bodies whose measurements were drawn within +-3 standard deviations, so it was
# never fitted beyond that: draws are clipped there (about 0.3 % of the entries; the variance stays ~0.99).
BETA_CLIP = 3.0
# Shot splits of each identity split: training images, or query and gallery images of held-out identities.
SHOT_SPLITS = {"train": ("train", "train"), "val": ("val_query", "val_gallery"), "test": ("query", "gallery")}

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


@dataclass(frozen=True)
class Recipe:
    """What the data set is made from (recorded in synth.json beside index.json): identities per identity split,
    outfits per identity, images per outfit, the seed, and `height` x `width`, the data set's native crop size
    (as a real data set has one: consumers resize crops to their own input size)."""

    train_identities: int
    val_identities: int
    test_identities: int
    outfits: int
    images_per_outfit: int
    seed: int
    height: int = 128
    width: int = 64

    def __post_init__(self) -> None:
        if self.train_identities < 1 or self.val_identities < 0 or self.test_identities < 1:
            raise UserError(
                f"synth: {self.train_identities} train, {self.val_identities} validation, {self.test_identities} "
                "test identities: expected at least 1 train and 1 test identity"
            )
        if self.outfits < 1 or self.images_per_outfit < 2:
            raise UserError(
                f"synth: {self.outfits} outfits x {self.images_per_outfit} images: expected at least 1 outfit and "
                "2 images per outfit"
            )
        if self.height < 32 or self.width < 16:
            raise UserError(f"synth: crop size {self.height}x{self.width}: expected at least 32x16 pixels")

    @property
    def identities(self) -> int:
        return self.train_identities + self.val_identities + self.test_identities

    @classmethod
    def from_config(cls, cfg: DataConfig) -> Recipe:
        """The recipe of the `data.synth_*` fields: `synth_identities` split by `synth_val_share` and
        `synth_test_share` (rounded; at least one validation identity when its share is positive, at least one
        test identity), the rest for training."""
        n = cfg.synth_identities
        val = max(1, round(n * cfg.synth_val_share)) if cfg.synth_val_share > 0 else 0
        test = max(1, round(n * cfg.synth_test_share))
        if n - val - test < 1:
            raise UserError(
                f"config data.synth_identities = {n} with synth_val_share = {cfg.synth_val_share} and "
                f"synth_test_share = {cfg.synth_test_share}: {val} validation + {test} test identities leave none "
                "for training"
            )
        return cls(n - val - test, val, test, cfg.synth_outfits, cfg.synth_images_per_outfit, cfg.synth_seed,
                   cfg.synth_height, cfg.synth_width)


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
    split: str  # "train", "val" or "test"
    betas: tuple[float, ...]  # the true shape, beta of the body model
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    outfits: tuple[int, ...]  # indices into the outfit list (shared outfits appear under several pids)


@dataclass(frozen=True)
class Shot:
    pid: int
    outfit: int  # the identity's outfit slot (its clothes label is f"{pid}_{outfit}")
    camera: int
    split: str  # the shard split: "train", "val_query", "val_gallery", "query" or "gallery"
    index: int


@dataclass(frozen=True)
class Camera:
    pitch_deg: float
    tint: tuple[float, float, float]
    exposure: float
    scene_seed: int


def colour(rng: np.random.Generator, palette: tuple[tuple[float, float, float], ...]) -> tuple[float, float, float]:
    """A palette colour, varied a little in brightness and hue."""
    base = np.array(palette[int(rng.integers(len(palette)))])
    return tuple(float(c) for c in np.clip(base * rng.uniform(0.85, 1.15) + rng.normal(0, 0.03, 3), 0, 1))


def _outfit(rng: np.random.Generator) -> Outfit:
    top, top2 = colour(rng, GARMENT_COLOURS), colour(rng, GARMENT_COLOURS)
    bottom, bottom2 = colour(rng, GARMENT_COLOURS), colour(rng, GARMENT_COLOURS)
    return Outfit(
        top=top,
        top2=top2,
        top_pattern=str(rng.choice(TOP_PATTERNS)),
        long_sleeves=bool(rng.random() < 0.6),
        bottom=bottom,
        bottom2=bottom2,
        bottom_pattern=str(rng.choice(BOTTOM_PATTERNS)),
        long_legs=bool(rng.random() < 0.75),
        shoes=colour(rng, GARMENT_COLOURS[:4] + GARMENT_COLOURS[11:12]),
        period=float(rng.uniform(0.09, 0.16)),
    )


def population_betas(rng: np.random.Generator, n: int, num_betas: int) -> np.ndarray:
    """n body shapes drawn like a population, beta ~ N(0, I) clipped at +-BETA_CLIP → (n, num_betas)."""
    return np.clip(rng.standard_normal((n, num_betas)), -BETA_CLIP, BETA_CLIP)


@dataclass(frozen=True)
class Plan:
    """Everything about the data set except the pixels: identities, outfits, shots, cameras, crop size (H, W)."""

    people: tuple[Identity, ...]
    outfits: tuple[Outfit, ...]
    shots: tuple[Shot, ...]
    cameras: tuple[Camera, ...]
    size: tuple[int, int]

    def person(self, pid: int) -> Identity:
        return self.people[pid - 1]


def design(recipe: Recipe, num_betas: int) -> Plan:
    """The data set's plan (no rendering), all drawn from `recipe.seed`; betas have `num_betas` entries.
    Identities 1.. are the train identities, then the validation ones, then the test ones."""
    outfits, images_per_outfit = recipe.outfits, recipe.images_per_outfit
    rng = np.random.default_rng([recipe.seed, 0])
    betas = population_betas(rng, recipe.identities, num_betas)
    splits = ["train"] * recipe.train_identities + ["val"] * recipe.val_identities + ["test"] * recipe.test_identities
    outfit_list: list[Outfit] = []
    people: list[Identity] = []
    for i, split in enumerate(splits):
        # Every second identity of a split wears the previous identity's first outfit as its last one: the
        # same clothes on another body, a hard negative (and a CC query's distractor) within the split.
        rank_in_split = i - splits.index(split)
        slots = []
        for o in range(outfits):
            if o == outfits - 1 and o > 0 and rank_in_split % 2 == 1:
                slots.append(people[-1].outfits[0])
            else:
                outfit_list.append(_outfit(rng))
                slots.append(len(outfit_list) - 1)
        people.append(
            Identity(
                i + 1,
                split,
                tuple(float(b) for b in betas[i]),
                colour(rng, SKIN_TONES),
                colour(rng, HAIR_COLOURS),
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
    # Held-out identities (validation and test alike): the first images_per_outfit // 4 images of each outfit
    # (1 to NUM_CAMERAS) are queries, on distinct cameras; the rest, on every camera, are the gallery.
    queries = min(NUM_CAMERAS, max(1, images_per_outfit // 4))
    for person in people:
        query, gallery = SHOT_SPLITS[person.split]
        for o in range(outfits):
            start = int(rng.integers(NUM_CAMERAS))
            for j in range(images_per_outfit):
                camera = (start + j) % NUM_CAMERAS
                shots.append(Shot(person.pid, o, camera, query if j < queries else gallery, len(shots)))
    if outfits == 1:
        log.warning("synth: one outfit per identity — the clothes-changing (CC) protocol has no valid query")
    return Plan(tuple(people), tuple(outfit_list), tuple(shots), tuple(cameras), (recipe.height, recipe.width))
