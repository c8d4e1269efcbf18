"""The embedded cloth-changing ReID data set (version 2), rendered from the body model with pytorch3d and
designed for measurement: identity is body shape, texture misleads, and the true shape is stored.

The design:
- An identity is a body shape drawn like a population: beta ~ N(0, I) in the body model's shape space
  (clipped at +-3, where the stand-in's shape space ends), so some people look alike as in real data; plus a
  skin tone and hair colour from small shared palettes. Its beta is the same in every image of it.
- Three identity splits: train, validation and test (`Recipe.train_identities`, `val_identities`,
  `test_identities`). Validation and test identities are held out alike: each outfit gives
  `images_per_outfit` // 4 (1 to 4) query images on distinct cameras and the rest go to the gallery, so the
  standard (other camera), SC (same clothes, other camera) and CC (other clothes) protocols all have valid
  queries. Shard splits: `train`; `val_query`, `val_gallery`; `query`, `gallery`. Model selection uses
  validation; test is reported.
- Each identity wears `outfits` outfits: per-body-part colours (top, sleeves, bottom, shoes) and patterns
  (stripes, checks, colour blocks) painted on the mesh's vertices. Every second identity of a split
  wears, as its last outfit, the first outfit of the identity before it, so the same clothes on a
  different body is a hard negative.
- Each image: a pose from the stand-in prior's standing/walking sampler, any heading, one of 4 cameras
  (each with its own elevation, scene, light colour and exposure), a random window of that camera's
  scene as background, random light position and strength, framing like a detector box (the body fills
  80-92 % of the height, small offsets) and sensor noise; crops are `height` x `width` pixels (the data set's
  native crop size, 128 x 64 by default).
- Masks and keypoints come from the renderer (hard mask; COCO-17 keypoints projected, confidence 0
  outside the crop). Every sample's json carries its identity's true `betas`; `truth.json` beside
  `index.json` lists each identity's split, betas, skin and hair. Everything is drawn from `seed`: the same
  recipe gives the same images.

Why version 2: version 1 spread identities about 5 standard deviations apart (N(0, 1.3^2) draws, farthest-point
selection, clipped at +-2.5), which made identification by shape easy and set the data against the
discriminator's N(0, I) prior; it had no validation identities and did not store the true shape.

Modules: `design` (the recipe and the plan: identities, outfits, cameras, shots), `garments` (painting
clothes on the mesh), `scenes` (the cameras' backdrops), `renderer` (shots → samples), `synthesis` (process
pool and writing: `synthesize`).
"""

from reid3dsl.data.synth.design import DATASET, Plan, Recipe, Shot, design
from reid3dsl.data.synth.renderer import ShotRenderer
from reid3dsl.data.synth.synthesis import RECIPE_NAME, SYNTH_VERSION, TRUTH_NAME, synthesize

__all__ = ["DATASET", "RECIPE_NAME", "SYNTH_VERSION", "TRUTH_NAME", "Plan", "Recipe", "Shot", "ShotRenderer", "design",
           "synthesize"]
