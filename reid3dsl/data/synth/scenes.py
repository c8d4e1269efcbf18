"""The cameras' scenes: one fixed backdrop per camera (a wall with fixtures over a paved floor), of which each
shot shows a random window."""

from __future__ import annotations

import cv2
import numpy as np

from reid3dsl.data.synth.design import Camera, colour

SCENE_COLOURS = (
    (0.55, 0.55, 0.52), (0.62, 0.58, 0.50), (0.52, 0.32, 0.26), (0.42, 0.44, 0.46), (0.70, 0.68, 0.62),
    (0.30, 0.38, 0.42), (0.38, 0.42, 0.30), (0.22, 0.22, 0.24), (0.66, 0.60, 0.52), (0.48, 0.40, 0.34),
)  # fmt: skip  # concrete, sandstone, brick, asphalt, plaster, glass, hedge, shadow, stone, wood


def scene(camera: Camera, height: int, width: int) -> np.ndarray:
    """A camera's fixed scene (height, width, 3) float in [0, 1]: a wall with fixtures over a paved floor;
    each shot of that camera shows a random window of it."""
    rng = np.random.default_rng(camera.scene_seed)
    wall, floor = (np.array(colour(rng, SCENE_COLOURS)) for _ in range(2))
    horizon = int(height * rng.uniform(0.55, 0.72))
    img = np.empty((height, width, 3))
    img[:horizon] = wall
    img[horizon:] = floor * 0.9
    for _ in range(int(rng.integers(5, 10))):  # windows, doors, pillars, shop fronts
        w, h = int(rng.integers(6, 40)), int(rng.integers(10, horizon))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, max(1, horizon - h // 2)))
        img[y : y + h, x : x + w] = np.clip(np.array(colour(rng, SCENE_COLOURS)) * rng.uniform(0.6, 1.2), 0, 1)
    for y in range(horizon + 6, height, int(rng.integers(8, 16))):  # paving joints
        img[y : y + 1, :] *= 0.8
    shade = np.linspace(1.0, rng.uniform(0.7, 1.1), height)[:, None, None]
    grain = rng.normal(0, 0.02, (height, width, 1))
    return cv2.GaussianBlur(np.clip(img * shade + grain, 0, 1).astype(np.float32), (3, 3), 0.8).astype(np.float64)
