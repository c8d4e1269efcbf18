"""Generating the stand-in body: the population's meshes, its shape space, the rigging, as the SMPL-format
dict smplx loads (`generate`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reid3dsl.body.constants import NUM_JOINTS, SMPL_PARENTS
from reid3dsl.body.standin.mesh import make_bodies
from reid3dsl.body.standin.population import sample_factors, shape_space
from reid3dsl.body.standin.rigging import joint_regressor, skinning_weights, vertex_ids
from reid3dsl.errors import UserError
from reid3dsl.log import progress

RESOLUTIONS = {"low": 1, "full": 3}  # refinement of the base tube layout (low: ~1.3k faces, full: ~11k)


@dataclass(frozen=True)
class StandinModel:
    """A generated body: the SMPL-format dict smplx loads and the vertex ids for its extra points."""

    smpl: dict[str, object]
    vertex_ids: dict[str, int]


def generate(resolution: str = "low", seed: int = 0) -> StandinModel:
    """Generate the stand-in body (deterministic in `resolution` and `seed`)."""
    if resolution not in RESOLUTIONS:
        raise UserError(f"stand-in resolution {resolution!r}: expected one of {', '.join(RESOLUTIONS)}")
    k = RESOLUTIONS[resolution]
    factors = sample_factors(np.random.default_rng(seed))
    # Few, large tensor operations, on one thread: element-wise work gains little from a second thread,
    # and on a shared, oversubscribed CPU torch's thread pool makes it about ten times slower.
    chunk = -(-len(factors) // k**2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parts = [make_bodies(factors[i:i + chunk], k) for i in
                 progress(range(0, len(factors), chunk), desc=f"stand-in body ({resolution})", unit="chunk")]
    finally:
        torch.set_num_threads(threads)
    faces, region = parts[0].faces, parts[0].region
    if any(not np.array_equal(p.faces, faces) for p in parts):
        raise RuntimeError("stand-in generator: topology differs between bodies")
    verts = np.concatenate([p.vertices for p in parts])
    joints = np.concatenate([p.joints for p in parts])
    lm0 = {n: v[:1] for n, v in parts[0].landmarks.items()}
    template = verts[0]
    V = template.shape[0]
    j_reg = joint_regressor(verts, joints, support=24 * k * k)
    weights = skinning_weights(template, region, lm0)
    kintree = np.array([[p if p >= 0 else 4294967295 for p in SMPL_PARENTS], list(range(NUM_JOINTS))], dtype=np.int64)
    smpl = {
        "v_template": template,
        "shapedirs": shape_space(verts),
        "posedirs": np.zeros((V, 3, 9 * (NUM_JOINTS - 1))),
        "J_regressor": j_reg,
        "weights": weights,
        "kintree_table": kintree,
        "f": faces.astype(np.uint32),
        "J": j_reg @ template,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    return StandinModel(smpl, vertex_ids(template, region, lm0))
