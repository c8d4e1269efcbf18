"""Transforms keep image, mask and keypoints consistent: shifts and flips move all three together."""

from __future__ import annotations

import numpy as np
import torch

from reid3dsl.body.constants import COCO17_NAMES
from reid3dsl.config import DataConfig
from reid3dsl.data.schema import Sample, SampleMeta
from reid3dsl.data.transforms import IMAGENET_MEAN, SampleTransform, denormalize, normalize

LEFT_SHOULDER, RIGHT_SHOULDER = COCO17_NAMES.index("left_shoulder"), COCO17_NAMES.index("right_shoulder")


def dotted_sample(seed: int = 0) -> Sample:
    """A dark 128 x 64 crop with a white dot at each keypoint and a mask over the left half only."""
    rng = np.random.default_rng(seed)
    image = np.full((128, 64, 3), 20, np.uint8)
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0] = rng.integers(12, 52, 17)
    kp[:, 1] = rng.integers(12, 116, 17)
    kp[:, 2] = 1.0
    kp[4, 2] = 0.0  # one missing keypoint
    for x, y, c in kp:
        if c > 0:
            image[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = 255
    mask = np.zeros((128, 64), np.uint8)
    mask[:, :32] = 255
    return Sample("k", image, kp, SampleMeta(1, 0, None, "toy", "train", "k.jpg"), mask)


def brightness_at(image: torch.Tensor, kp: torch.Tensor) -> list[float]:
    """Mean of the denormalised image in a 3 x 3 window at each visible keypoint."""
    img = denormalize(image).mean(0)
    out = []
    for x, y, c in kp.tolist():
        if c > 0:
            xi, yi = round(x), round(y)
            out.append(float(img[max(yi - 1, 0) : yi + 2, max(xi - 1, 0) : xi + 2].max()))
    return out


def test_keypoints_follow_the_image_through_random_shifts_and_flips() -> None:
    cfg = DataConfig(pad=10, flip_prob=0.5, erase_prob=0.0)
    transform = SampleTransform(cfg, train=True)
    rng = np.random.default_rng(1)
    sample = dotted_sample()
    for _ in range(12):
        out = transform(sample, rng)
        # Keypoints are in pixels of shape_image (same size as the crop here): each sits on its dot.
        assert min(brightness_at(out["shape_image"], out["keypoints"])) > 0.8
        assert out["keypoints"][:, 2].tolist().count(0.0) == 1


def test_a_flip_mirrors_the_mask_and_swaps_left_and_right_keypoints() -> None:
    sample = dotted_sample()
    plain = SampleTransform(DataConfig(pad=0, flip_prob=0.0, erase_prob=0.0), train=True)(
        sample, np.random.default_rng(0)
    )
    flipped = SampleTransform(DataConfig(pad=0, flip_prob=1.0, erase_prob=0.0), train=True)(
        sample, np.random.default_rng(0)
    )
    width = 64
    # The person's left shoulder after the flip is the mirror image of its right shoulder before it.
    assert flipped["keypoints"][LEFT_SHOULDER, 0] == width - 1 - plain["keypoints"][RIGHT_SHOULDER, 0]
    assert flipped["keypoints"][LEFT_SHOULDER, 1] == plain["keypoints"][RIGHT_SHOULDER, 1]
    assert torch.equal(flipped["mask"], plain["mask"].flip(-1))
    assert (
        plain["mask"][:, :6].mean() == 1 and flipped["mask"][:, -6:].mean() == 1 and flipped["mask"][:, :6].max() == 0
    )
    assert min(brightness_at(flipped["shape_image"], flipped["keypoints"])) > 0.8


def test_random_erasing_touches_only_the_rgb_stream_image() -> None:
    sample = dotted_sample()
    erased = SampleTransform(DataConfig(erase_prob=1.0), train=True)(sample, np.random.default_rng(3))
    kept = SampleTransform(DataConfig(erase_prob=0.0), train=True)(sample, np.random.default_rng(3))
    assert not torch.equal(erased["image"], kept["image"])
    assert torch.equal(erased["shape_image"], kept["shape_image"])
    assert torch.equal(erased["mask"], kept["mask"]) and torch.equal(erased["keypoints"], kept["keypoints"])


def test_evaluation_transform_is_deterministic_and_resizes_every_output() -> None:
    cfg = DataConfig(height=64, width=32, shape_height=96, shape_width=48, sil_height=16, sil_width=8)
    transform = SampleTransform(cfg, train=False)
    sample = dotted_sample()
    a, b = transform(sample), transform(sample)
    assert all(torch.equal(a[k], b[k]) for k in ("image", "shape_image", "mask", "keypoints"))
    assert a["image"].shape == (3, 64, 32) and a["shape_image"].shape == (3, 96, 48) and a["mask"].shape == (16, 8)
    # Keypoints scale into shape_image pixels (96 x 48 from 128 x 64).
    np.testing.assert_allclose(a["keypoints"][0, :2].numpy(), sample.keypoints[0, :2] * 0.75, atol=1e-4)
    assert min(brightness_at(a["shape_image"], a["keypoints"])) > 0.5


def test_denormalize_inverts_normalize() -> None:
    x = torch.rand(2, 3, 8, 4)
    assert torch.allclose(denormalize(normalize(x)), x, atol=1e-6)
    assert torch.allclose(normalize(torch.tensor(IMAGENET_MEAN).view(3, 1, 1).expand(3, 2, 2)), torch.zeros(3, 2, 2))


def test_a_crop_without_a_mask_says_so_and_gets_an_empty_mask() -> None:
    sample = dotted_sample()
    sample.mask = None
    out = SampleTransform(DataConfig(), train=True)(sample, np.random.default_rng(0))
    assert out["has_mask"] is False
    assert out["mask"].shape == (32, 16) and not out["mask"].any()


def test_the_body_proxy_holds_the_silhouette_and_side_heatmaps_and_no_texture() -> None:
    cfg = DataConfig(pad=0, flip_prob=1.0, erase_prob=0.5, shape_input="proxy", shape_height=64, shape_width=32)
    transform = SampleTransform(cfg, train=True)
    sample = dotted_sample()
    recoloured = Sample(sample.key, 255 - sample.image, sample.keypoints, sample.meta, sample.mask)
    out = transform(sample, np.random.default_rng(3))
    proxy = out["shape_image"]
    assert proxy.shape == (3, 64, 32)
    # Same geometric draw, other clothes: the 3D stream's input is unchanged, the RGB stream's is not.
    other = transform(recoloured, np.random.default_rng(3))
    assert torch.equal(other["shape_image"], proxy)
    assert not torch.allclose(other["image"], out["image"])
    # Channel 0 is the (flipped) mask: the person's left half of the crop now lies on the right.
    assert proxy[0, :, 20:].mean() > 0.9 and proxy[0, :, :12].mean() < 0.1
    # Channels 1 and 2 peak at the left / right shoulder (keypoints in pixels of the proxy, after the flip).
    for channel, joint in ((1, LEFT_SHOULDER), (2, RIGHT_SHOULDER)):
        x, y, _ = out["keypoints"][joint].tolist()
        assert proxy[channel, round(y), round(x)] > 0.9
    # A crop without keypoints or mask gets an all-zero proxy, not an error.
    bare = Sample(sample.key, sample.image, np.zeros((17, 3), np.float32), sample.meta, None)
    assert transform(bare, np.random.default_rng(0))["shape_image"].abs().sum() == 0


def test_test_time_flip_of_a_proxy_equals_the_proxy_of_the_mirrored_sample() -> None:
    from reid3dsl.body.constants import COCO17_FLIP_PERM
    from reid3dsl.data.transforms import flip_inputs

    # Sizes equal to the crop's, so the only difference can be the flip itself.
    cfg = DataConfig(height=128, width=64, shape_height=128, shape_width=64, shape_input="proxy")
    transform = SampleTransform(cfg, train=False)
    sample = dotted_sample(3)
    mirrored_kp = sample.keypoints[list(COCO17_FLIP_PERM)].copy()
    mirrored_kp[:, 0] = np.where(mirrored_kp[:, 2] > 0, 64 - 1 - mirrored_kp[:, 0], 0)  # torchvision's flip
    mirrored = Sample("m", sample.image[:, ::-1].copy(), mirrored_kp, sample.meta, sample.mask[:, ::-1].copy())
    out, out_mirrored = transform(sample), transform(mirrored)
    image, proxy = flip_inputs(out["image"][None], out["shape_image"][None], "proxy")
    assert torch.allclose(proxy[0], out_mirrored["shape_image"], atol=1e-5)
    assert torch.allclose(image[0], out_mirrored["image"], atol=1e-5)
    # The left-side heatmap is not symmetric here: a plain mirror (the old test-time flip) differs.
    assert not torch.allclose(out["shape_image"].flip(-1), out_mirrored["shape_image"], atol=1e-2)
