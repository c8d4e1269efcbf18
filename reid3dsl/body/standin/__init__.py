"""The stand-in body: a generated SMPL-format model for machines without the licensed SMPL file.

`ensure_standin(out_dir)` writes `out_dir/smpl/SMPL_NEUTRAL.pkl` (the keys and shapes smplx reads:
v_template, shapedirs, posedirs, J_regressor, weights, kintree_table, f) and `out_dir/smpl/vertex_ids.json`
(this mesh's vertices for the 21 points smplx reads from vertices), once; later calls reuse them.

How the body is made. A person is a smooth union of anatomical primitives (ellipsoids and round
cones for pelvis, belly, chest, shoulders, neck, head, limbs, hands, feet) laid on SMPL's 24-joint
skeleton at human proportions (1.7 m, y up, x to the subject's left, z forward, T-pose) (`sdf`). The
surface mesh has a fixed tube topology: a torso tube closed by the head, two arm tubes grafted onto holes
in the torso's sides and two leg tubes hung from the crotch; every vertex is found by casting a ray from
the skeleton to the implicit surface, so the same topology fits any body (`mesh`). 13 body measurements
(stature, leg and arm length, girth, belly, shoulder and hip width, chest depth, limb and thigh
thickness, neck length, head size, foot length) are sampled for a population of bodies; the
template is the mean body, the shape blend shapes are the population's principal components
scaled to unit variance, so beta ~ N(0, I) gives plausible people (`population`); the joint regressor is
fitted over the population (exact on the template), and skinning weights fall off with the distance to
the bones of each body region (`rigging`). Pose blend shapes are zero. `model` assembles the SMPL-format
dict, `cache` writes it once and holds the command line (`python -m reid3dsl.body.standin`).
"""

from reid3dsl.body.standin.cache import GENERATOR_VERSION, ensure_standin, main, standin_paths
from reid3dsl.body.standin.model import RESOLUTIONS, StandinModel, generate

__all__ = ["GENERATOR_VERSION", "RESOLUTIONS", "StandinModel", "ensure_standin", "generate", "main", "standin_paths"]
