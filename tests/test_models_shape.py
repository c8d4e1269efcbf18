"""The 3D stream's regressors: E_pose reads where things are, and MGS pools each body part where the posed body
shows it."""

from __future__ import annotations

import pytest
import torch

from reid3dsl.config import Config
from reid3dsl.models.threedsl import ThreeDSL


@pytest.fixture(scope="module")
def model(standin_dir: str) -> ThreeDSL:
    cfg = Config.model_validate({
        "data": {"height": 128, "width": 64, "shape_height": 128, "shape_width": 64, "shape_input": "proxy"},
        "body": {"standin_dir": standin_dir},
        "model": {"streams": "3d", "shape_feat_dim": 32, "num_parts": 6},
    })
    torch.manual_seed(0)
    return ThreeDSL.from_config(cfg, num_classes=4).eval()


def _upright(model: ThreeDSL, n: int) -> torch.Tensor:
    return model.shape.pose.init_pose.reshape(24, 6)[None].expand(n, -1, -1)


def _centre_row(maps: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(maps.shape[-2], dtype=torch.float32)
    return (maps.sum(-1) * rows).sum(-1)


def test_part_maps_sum_to_one_and_put_the_head_above_the_torso_above_the_legs(model: ThreeDSL) -> None:
    from pytorch3d.transforms import rotation_6d_to_matrix

    rotmats = rotation_6d_to_matrix(_upright(model, 2))
    cam = torch.tensor([[0.9, 0.0, 0.0], [0.9, 0.0, 0.3]])
    maps = model.locate_parts(rotmats, cam, (16, 8))
    assert maps.shape == (2, 6, 16, 8)
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(2, 6))
    head, torso, _, _, left_leg, right_leg = _centre_row(maps[0])
    assert head < torso < left_leg and abs(left_leg - right_leg) < 1.0
    # The body moved down the crop (ty > 0: image y points down): the parts above the legs (which leave the crop)
    # follow it.
    assert (_centre_row(maps[1])[:4] > _centre_row(maps[0])[:4] + 1.5).all()


def test_a_part_outside_the_crop_gets_a_uniform_map(model: ThreeDSL) -> None:
    from pytorch3d.transforms import rotation_6d_to_matrix

    maps = model.locate_parts(rotation_6d_to_matrix(_upright(model, 1)), torch.tensor([[0.9, 5.0, 0.0]]), (4, 2))
    torch.testing.assert_close(maps, torch.full_like(maps, 1 / 8))


def test_pose_regressor_sees_where_features_are_not_only_their_mean(model: ThreeDSL) -> None:
    fmap = torch.zeros(1, 512, 16, 8)
    fmap[:, :, :4] = torch.rand(1, 512, 4, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        top = model.shape.pose(fmap)
        bottom = model.shape.pose(fmap.flip(2))  # the same global average, the features at the other end
    assert not torch.allclose(top[0], bottom[0]) and not torch.allclose(top[1], bottom[1])
