"""The stand-in's population of bodies: 13 body measurements as multiplicative factors around the mean body,
their covariance, the sampled population, and the shape space (principal components) it spans."""

from __future__ import annotations

import math

import numpy as np

NUM_SHAPE_COMPONENTS = 10
POPULATION = 64

# Body measurements as multiplicative factors around the mean body, with their standard deviations.
# Deliberately a little wider than real adults so that identities differ clearly in silhouette.
PARAMS = ("stature", "legs", "arms", "girth", "belly", "shoulders", "hips", "chest", "limbs", "neck",
          "head", "thighs", "feet")
PARAM_STD = np.array([0.075, 0.05, 0.05, 0.15, 0.15, 0.10, 0.10, 0.10, 0.14, 0.12, 0.05, 0.10, 0.06])
# Correlations between measurements (heavier people have bigger bellies and limbs; broad shoulders
# tend to go with narrower hips).
_CORRELATED = {("girth", "belly"): 0.6, ("girth", "limbs"): 0.5, ("girth", "thighs"): 0.4,
               ("girth", "chest"): 0.4, ("shoulders", "hips"): -0.3, ("stature", "head"): 0.3}


def param_covariance() -> np.ndarray:
    corr = np.eye(len(PARAMS))
    for (a, b), rho in _CORRELATED.items():
        i, j = PARAMS.index(a), PARAMS.index(b)
        corr[i, j] = corr[j, i] = rho
    return corr * np.outer(PARAM_STD, PARAM_STD)


def sample_factors(rng: np.random.Generator) -> np.ndarray:
    """Measurement factors (POPULATION + 1, P) of the population; row 0 is the mean body (all ones)."""
    cov = param_covariance()
    z = rng.multivariate_normal(np.zeros(len(PARAMS)), cov, size=POPULATION)
    z = np.clip(z, -3 * PARAM_STD, 3 * PARAM_STD)
    return np.concatenate([np.ones((1, len(PARAMS))), 1.0 + z], axis=0)


def shape_space(verts: np.ndarray) -> np.ndarray:
    """Shape blend shapes (V, 3, NUM_SHAPE_COMPONENTS) of the population's meshes (POPULATION + 1, V, 3), row 0
    the mean body: its principal components around the mean body, scaled to unit variance (so beta ~ N(0, I)
    gives plausible people) and signed so that a positive coefficient grows the body."""
    template = verts[0]
    dev = (verts[1:] - template).reshape(POPULATION, -1)
    _, sv, vt = np.linalg.svd(dev, full_matrices=False)
    comps = vt[:NUM_SHAPE_COMPONENTS] * (sv[:NUM_SHAPE_COMPONENTS, None] / math.sqrt(POPULATION))
    comps *= np.sign(comps @ template.reshape(-1))[:, None]
    return comps.reshape(NUM_SHAPE_COMPONENTS, template.shape[0], 3).transpose(1, 2, 0)
