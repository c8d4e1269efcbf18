"""The embedded cloth-changing ReID data set, rendered from the body model with pytorch3d.

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
  scene as background, random light position and strength, framing jitter and sensor noise; crops are
  `height` x `width` pixels (the recipe's native crop size, 128 x 64 by default).
- Identities are split in half: train, and test; each test identity's outfit gives `images_per_outfit`
  // 4 (at least 1) query images on distinct cameras and the rest go to the gallery, so the standard
  (other camera), SC (same clothes, other camera) and CC (other clothes) protocols all have valid queries.
- Masks and keypoints come from the renderer (hard mask; COCO-17 keypoints projected, confidence 0
  outside the crop). Everything is drawn from `seed`: the same recipe gives the same images.

Modules: `design` (the recipe and the plan: identities, outfits, cameras, shots), `garments` (painting
clothes on the mesh), `scenes` (the cameras' backdrops), `renderer` (shots → samples), `synthesis` (process
pool and writing: `synthesize`).
"""

from reid3dsl.data.synth.design import DATASET, Plan, Recipe, Shot, design
from reid3dsl.data.synth.renderer import ShotRenderer
from reid3dsl.data.synth.synthesis import RECIPE_NAME, SYNTH_VERSION, synthesize

__all__ = ["DATASET", "RECIPE_NAME", "SYNTH_VERSION", "Plan", "Recipe", "Shot", "ShotRenderer", "design", "synthesize"]
