"""The SMPL-prior discriminator: HMR's three kinds of heads, and it learns what the prior looks like."""

from __future__ import annotations

import torch

from reid3dsl import losses
from reid3dsl.body.prior import StandinPrior
from reid3dsl.models.discriminator import SMPLDiscriminator


def test_discriminator_scores_every_joint_the_whole_pose_and_the_shape() -> None:
    disc = SMPLDiscriminator(num_joints=24, num_betas=10)
    rot, betas = StandinPrior().sample(5, torch.Generator().manual_seed(0))
    scores = disc(rot, betas)
    assert scores.shape == (5, 24 + 1 + 1)
    # the joints share one embedding: changing one joint's rotation changes its own per-joint score only
    changed = rot.clone()
    changed[:, 7] = changed[:, 7].transpose(-1, -2)
    delta = (disc(changed, betas) - scores).abs()
    assert (delta[:, 7] > 0).all() and torch.equal(delta[:, :7], torch.zeros(5, 7))
    assert torch.equal(delta[:, 8:24], torch.zeros(5, 16)) and (delta[:, 24] > 0).all()
    assert torch.equal(delta[:, 25], torch.zeros(5)), "the shape head sees beta only"


def test_discriminator_separates_prior_poses_from_random_rotations() -> None:
    from pytorch3d.transforms import quaternion_to_matrix

    torch.manual_seed(0)
    disc = SMPLDiscriminator()
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    prior = StandinPrior()
    g = torch.Generator().manual_seed(1)

    def fakes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        # uniformly random rotations: normalised 4-D Gaussians are uniform unit quaternions
        quat = torch.nn.functional.normalize(torch.randn(n * 24, 4, generator=g), dim=-1)
        return quaternion_to_matrix(quat).reshape(n, 24, 3, 3), torch.randn(n, 10, generator=g)

    for _ in range(200):
        loss = losses.lsgan_discriminator_loss(disc(*prior.sample(32, g)), disc(*fakes(32)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        real, fake = disc(*prior.sample(256, g))[:, :25], disc(*fakes(256))[:, :25]  # pose heads
    assert float(real.mean()) > 0.8 and float(fake.mean()) < 0.2
    accuracy = ((real.mean(1) > 0.5).float().mean() + (fake.mean(1) < 0.5).float().mean()) / 2
    assert accuracy > 0.98
    assert float(losses.lsgan_generator_loss(fake)) > float(losses.lsgan_generator_loss(real))
