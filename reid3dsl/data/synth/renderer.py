"""Rendering shots of a plan: posed, shaped and painted bodies through pytorch3d's textured renderer
(`reid3dsl.body.render`), framed like detector crops over the camera's scene, with the renderer's mask and
COCO-17 keypoints, as shard-format samples that carry the identity's true beta."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from reid3dsl.config import BodyConfig
from reid3dsl.data.schema import Sample, SampleMeta
from reid3dsl.data.synth.design import DATASET, Plan, Shot
from reid3dsl.data.synth.garments import regions, vertex_colours
from reid3dsl.data.synth.scenes import scene


def _rotation_x(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]])


def detector_framing(verts: torch.Tensor, focal: float, height: int, fill: torch.Tensor,
                     shift: torch.Tensor) -> torch.Tensor:
    """The camera translation (B, 3) that frames bodies `verts` (B, V, 3) like detector boxes in a crop `height`
    pixels high: each body's height fills the share `fill` (B,) of the crop, its centre `shift` (B, 2) pixels
    off the crop's centre; `focal` is the normalised focal length."""
    lo, hi = verts.min(dim=1).values, verts.max(dim=1).values
    z = focal * (hi[:, 1] - lo[:, 1]) / (2 * fill)
    centre = (lo + hi) / 2
    per_px = 2 * z / (height * focal)
    return torch.stack([-centre[:, 0] + shift[:, 0] * per_px, -centre[:, 1] + shift[:, 1] * per_px, z], dim=1)


class ShotRenderer:
    """Renders shots of a `Plan` at its crop size with the body model of `body_cfg`."""

    def __init__(self, plan: Plan, body_cfg: BodyConfig) -> None:
        from reid3dsl.body.prior import StandinPrior
        from reid3dsl.body.render import TexturedRenderer
        from reid3dsl.body.smpld import load_body_model

        self.plan = plan
        self.model = load_body_model(body_cfg)
        # Pedestrians: the stand-in prior's standing/walking sampler, whatever prior training uses.
        self.prior = StandinPrior(self.model.num_betas)
        self.renderer = TexturedRenderer(body_cfg)
        h, w = plan.size
        # The rest pose (T-pose of the mean body) fixes where garments and patterns sit on the mesh.
        rest_out = self.model(torch.zeros(1, self.model.num_betas), torch.eye(3).expand(1, 24, 3, 3))
        rest = rest_out.vertices[0].numpy().astype(np.float64)
        parts = [g.numpy() for g in self.model.part_vertex_groups(10)]
        region = regions(rest, rest_out.joints[0].numpy(), rest_out.keypoints[0].numpy(), parts)
        self.colours = {
            (p.pid, o): torch.from_numpy(vertex_colours(p, plan.outfits[slot], region, rest)).float()
            for p in plan.people
            for o, slot in enumerate(p.outfits)
        }
        self.scenes = [scene(c, 2 * h, 4 * w) for c in plan.cameras]

    def sample_poses(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n standing/walking body poses (n, 24, 3, 3); the global orientation is set per shot by `render`."""
        return self.prior.sample(n, generator)[0]

    def render(self, shots: list[Shot], poses: torch.Tensor, rng: np.random.Generator) -> list[Sample]:
        """Shots with body poses (n, 24, 3, 3) → samples (heading, framing, light, background from `rng`)."""
        from reid3dsl.body.prior import upright_orientation

        plan, n = self.plan, len(shots)
        h, w = plan.size
        cameras = [plan.cameras[s.camera] for s in shots]
        heading = torch.from_numpy(rng.uniform(0, 2 * math.pi, n)).float()
        # A camera looking down by theta sees the body's up axis tilted towards it: a rotation about x by +theta.
        pitch = torch.stack([_rotation_x(c.pitch_deg) for c in cameras])
        pose = poses.clone()
        pose[:, 0] = pitch @ upright_orientation(heading)
        betas = torch.tensor([plan.person(s.pid).betas for s in shots], dtype=torch.float32)
        body = self.model(betas, pose)
        verts = body.vertices
        # Frame each person like a detector crop: the body fills 80-92 % of the height, small offsets.
        fill = torch.from_numpy(rng.uniform(0.80, 0.92, n)).float()
        shift = torch.from_numpy(rng.uniform(-1, 1, (n, 2)) * [0.05 * w, 0.03 * h]).float()
        cam_t = detector_framing(verts, self.renderer.focal, h, fill, shift)
        z = cam_t[:, 2]
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
            verts, self.model.faces, colours, cam_t, (h, w), keypoints=body.keypoints, light_location=light,
            ambient=ambient, diffuse=diffuse,
        )  # fmt: skip
        samples = []
        for i, shot in enumerate(shots):
            cam, backdrop, mask = cameras[i], self.scenes[shot.camera], out.mask[i].numpy()
            y0 = int(rng.integers(0, backdrop.shape[0] - h + 1))
            x0 = int(rng.integers(0, backdrop.shape[1] - w + 1))
            background = backdrop[y0 : y0 + h, x0 : x0 + w] * np.array(cam.tint)
            image = np.where(mask[..., None], out.rgb[i].numpy(), background) * cam.exposure * rng.uniform(0.9, 1.1)
            image = cv2.GaussianBlur(image.astype(np.float32), (3, 3), 0.6)  # optics: no razor-sharp edges
            image = image + rng.normal(0, rng.uniform(0.005, 0.03), image.shape)  # sensor noise
            kp = out.keypoints[i].numpy().astype(np.float32)
            kp[kp[:, 2] == 0, :2] = 0.0
            meta = SampleMeta(
                shot.pid, shot.camera, f"{shot.pid}_{shot.outfit}", DATASET, shot.split, f"synth/{shot.index:06d}",
                betas=plan.person(shot.pid).betas,
            )
            key = f"{shot.split}/{shot.pid:04d}_c{shot.camera}_o{shot.outfit}_{shot.index:06d}"
            pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
            samples.append(Sample(key, pixels, kp, meta, np.where(mask, 255, 0).astype(np.uint8)))
        return samples
