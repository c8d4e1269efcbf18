"""The projection and adversarial losses: zero at their targets, weighted as documented."""

from __future__ import annotations

import torch

from reid3dsl import losses


def test_lsgan_losses_vanish_at_their_targets_and_grow_away_from_them() -> None:
    ones, zeros = torch.ones(4, 26), torch.zeros(4, 26)
    assert float(losses.lsgan_discriminator_loss(ones, zeros)) == 0.0
    assert float(losses.lsgan_discriminator_loss(zeros, ones)) == 2.0
    assert float(losses.lsgan_generator_loss(ones)) == 0.0
    assert float(losses.lsgan_generator_loss(zeros)) == 1.0
    assert float(losses.lsgan_generator_loss(torch.full((4, 26), 0.5))) == 0.25


def test_keypoint_loss_weights_by_confidence_and_ignores_the_resolution() -> None:
    pred = torch.tensor([[[10.0, 20.0], [30.0, 40.0]]])
    target = torch.tensor([[[10.0, 28.0, 1.0], [0.0, 0.0, 0.0]]])  # second keypoint missing
    small = losses.keypoint_loss(pred, target, (64, 32))
    assert torch.isclose(small, torch.tensor((8 / 32) ** 2 / 2))  # half-heights, mean over keypoints
    doubled_pred, doubled_target = pred * 2, target * torch.tensor([2.0, 2.0, 1.0])
    assert torch.isclose(losses.keypoint_loss(doubled_pred, doubled_target, (128, 64)), small)
    half = target.clone()
    half[0, 0, 2] = 0.5
    assert torch.isclose(losses.keypoint_loss(pred, half, (64, 32)), small / 2)


def test_silhouette_loss_is_the_mean_squared_difference() -> None:
    mask = torch.zeros(2, 32, 16)
    mask[:, 8:24, 4:12] = 1.0
    assert float(losses.silhouette_loss(mask, mask)) == 0.0
    assert torch.isclose(losses.silhouette_loss(torch.zeros_like(mask), mask), mask.mean())


def test_displacement_loss_does_not_depend_on_the_vertex_count() -> None:
    few, many = torch.full((2, 100, 3), 0.01), torch.full((2, 6890, 3), 0.01)
    assert torch.isclose(losses.displacement_loss(few), losses.displacement_loss(many))
    assert torch.isclose(losses.displacement_loss(few), torch.tensor(3e-4))
