"""Making the set: render the plan's shots in a process pool (the same images whatever the number of
processes) and write them as shards with index.json, the recipe (synth.json) and the per-identity truth
(truth.json) (`synthesize`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from reid3dsl.config import BodyConfig, StorageConfig
from reid3dsl.data.index import INDEX_NAME
from reid3dsl.data.schema import Sample
from reid3dsl.data.synth.design import DATASET, Plan, Recipe, Shot, design
from reid3dsl.data.synth.renderer import ShotRenderer
from reid3dsl.data.writer import DatasetWriter
from reid3dsl.errors import UserError
from reid3dsl.log import progress

log = logging.getLogger(__name__)

SYNTH_VERSION = 2  # bump when the images of a recipe change, so cached sets are rebuilt
RECIPE_NAME = "synth.json"
TRUTH_NAME = "truth.json"
SHARD_SIZE = 64
RENDER_BATCH = 32


def _batches(items: list[Shot], size: int) -> Iterator[list[Shot]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _recipe_json(recipe: Recipe, body_cfg: BodyConfig) -> dict:
    return {
        "version": SYNTH_VERSION,
        **dataclasses.asdict(recipe),
        "body": {
            "model_path": body_cfg.model_path,
            "standin_resolution": body_cfg.standin_resolution,
            "standin_seed": body_cfg.standin_seed,
            "num_betas": body_cfg.num_betas,
            "focal_length": body_cfg.focal_length,
            "focal_res": body_cfg.focal_res,
        },
    }


def truth_json(plan: Plan) -> dict:
    """The per-identity truth of a plan: pid → split ("train", "val", "test"), true beta, skin and hair colour."""
    return {
        "identities": {
            str(p.pid): {"split": p.split, "betas": list(p.betas), "skin": list(p.skin), "hair": list(p.hair)}
            for p in plan.people
        }
    }


def _complete(out_dir: Path, recipe: dict) -> bool:
    try:
        return (out_dir / INDEX_NAME).is_file() and json.loads((out_dir / RECIPE_NAME).read_text()) == recipe
    except (OSError, ValueError):
        return False


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


def synthesize(out_dir: str | Path, recipe: Recipe, body_cfg: BodyConfig, processes: int | None = None) -> Path:
    """Render the cloth-changing set of `recipe` into `out_dir` (the data set folder: index.json, shards and
    the recipe go there); returns `out_dir`. Returns at once when `out_dir` already holds this recipe's complete
    set; safe when processes race (each builds in a temp folder, the first to finish wins). Renders in
    `processes` processes (default: one per available core); the images do not depend on that number."""
    out = Path(out_dir)
    recorded = _recipe_json(recipe, body_cfg)
    if _complete(out, recorded):
        log.info("synth: %s is complete, nothing to do", out)
        return out
    plan = design(recipe, body_cfg.num_betas)
    # Shards must mix identities (a reader holding a few shards still sees many identities for P x K
    # batches): shots are written in a seeded random order.
    order = [plan.shots[i] for i in np.random.default_rng([recipe.seed, 3]).permutation(len(plan.shots))]
    jobs = list(enumerate(_batches(order, RENDER_BATCH)))
    processes = min(processes or _processes(), len(jobs))
    log.info("synth: rendering %d images in %d process(es) into %s", len(plan.shots), processes, out)
    try:
        with DatasetWriter(str(out), DATASET, StorageConfig(), shard_size=SHARD_SIZE, replace=out.exists()) as writer:
            if processes == 1:
                _Worker.setup(plan, body_cfg, recipe.seed, None)
                results = map(_Worker.render, jobs)
                _write(writer, progress(results, "synth", total=len(jobs), unit="batch"))
            else:
                _prepare_body(body_cfg)
                ctx = multiprocessing.get_context("fork")
                initargs = (plan, body_cfg, recipe.seed, 1)
                with ctx.Pool(processes, initializer=_Worker.setup, initargs=initargs) as pool:
                    _write(writer, progress(pool.imap(_Worker.render, jobs), "synth", total=len(jobs), unit="batch"))
            writer.add_file(RECIPE_NAME, json.dumps(recorded, indent=1, sort_keys=True).encode())
            writer.add_file(TRUTH_NAME, json.dumps(truth_json(plan), indent=1).encode())
    except FileExistsError:
        if _complete(out, recorded):  # another process finished the same set first
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
