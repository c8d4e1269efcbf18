"""The pose/shape prior: rotations within joint limits, upright in the camera frame; the AMASS-format reader."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reid3dsl.body.constants import JOINT
from reid3dsl.body.prior import JOINT_LIMITS_DEG, AMASSPrior, StandinPrior, load_prior
from reid3dsl.config import BodyConfig
from reid3dsl.errors import UserError


def _assert_rotations(rot: torch.Tensor) -> None:
    eye = torch.eye(3).expand_as(rot)
    assert torch.allclose(rot @ rot.transpose(-1, -2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(rot.shape[:-2]), atol=1e-5)


def _upright(global_orient: torch.Tensor) -> torch.Tensor:
    """How well each body's up axis (+y) points up in the camera (-y): cosine (n,)."""
    return -(global_orient @ torch.tensor([0.0, 1.0, 0.0]))[:, 1]


def test_standin_prior_gives_rotations_within_joint_limits() -> None:
    from pytorch3d.transforms import matrix_to_euler_angles

    prior = StandinPrior(num_betas=10)
    rot, betas = prior.sample(512, torch.Generator().manual_seed(0))
    assert rot.shape == (512, 24, 3, 3) and betas.shape == (512, 10)
    _assert_rotations(rot)
    euler = torch.rad2deg(matrix_to_euler_angles(rot[:, 1:], "XYZ"))
    assert (euler >= prior.lower[1:] - 1e-3).all() and (euler <= prior.upper[1:] + 1e-3).all()
    assert set(JOINT_LIMITS_DEG) == {n for n in JOINT if n != "pelvis"}
    assert (_upright(rot[:, 0]) > math.cos(math.radians(15))).all(), "people stand upright in the camera"
    # natural poses: arms down by the sides, not in the T-pose; every heading occurs
    shoulder = euler[:, JOINT["left_shoulder"] - 1, 2]
    assert (shoulder < -40).all()
    facing = (rot[:, 0] @ torch.tensor([0.0, 0.0, 1.0]))[:, [0, 2]]
    assert (facing[:, 1] < -0.9).any() and (facing[:, 1] > 0.9).any() and (facing[:, 0].abs() > 0.9).any()
    assert abs(float(betas.mean())) < 0.1 and abs(float(betas.std()) - 1) < 0.1


def test_walking_poses_swing_the_legs_in_antiphase() -> None:
    e = StandinPrior(noise_deg=0.0).body_euler(400, torch.Generator().manual_seed(1))
    left, right = e[:, JOINT["left_hip"], 0], e[:, JOINT["right_hip"], 0]
    walking = (left - right).abs() > 10
    assert walking.float().mean() > 0.3
    assert (torch.sign(left[walking]) == -torch.sign(right[walking])).all()


def test_axis_angle_samples_are_the_same_rotations() -> None:
    from pytorch3d.transforms import axis_angle_to_matrix

    prior = StandinPrior()
    aa, betas = prior.sample_axis_angle(16, torch.Generator().manual_seed(2))
    rot, betas2 = prior.sample(16, torch.Generator().manual_seed(2))
    assert aa.shape == (16, 24, 3)
    assert torch.allclose(axis_angle_to_matrix(aa), rot, atol=1e-5) and torch.equal(betas, betas2)


def _amass_file(path: Path, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    poses = (0.3 * rng.standard_normal((frames, 156))).astype(np.float32)
    betas = rng.standard_normal(16).astype(np.float32)
    np.savez(path, poses=poses, betas=betas, trans=np.zeros((frames, 3)), gender="neutral", mocap_framerate=120.0)
    return poses, betas


def test_amass_reader_reads_sequences_and_skips_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pytorch3d.transforms import axis_angle_to_matrix

    (tmp_path / "subject").mkdir()
    poses, betas = _amass_file(tmp_path / "subject" / "walk_poses.npz", frames=40, seed=0)
    _amass_file(tmp_path / "subject" / "run_poses.npz", frames=20, seed=1)
    np.savez(tmp_path / "subject" / "shape.npz", betas=betas)  # AMASS's per-subject shape file: no poses
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with caplog.at_level(logging.WARNING):
        prior = AMASSPrior(tmp_path, num_betas=10, frame_stride=2)
    assert len(prior) == 20 + 10
    assert set(prior.skipped) == {str(tmp_path / "subject" / "shape.npz"), str(tmp_path / "broken.npz")}
    assert "skipped 2 of 4 files" in caplog.text
    # body joints 1-21 come from the first 66 values, the hand joints are identity, betas the first 10
    frame = [i for i in range(len(prior)) if torch.allclose(prior.betas[i], torch.from_numpy(betas[:10]))]
    walk = prior.rotmats[frame[0]]
    assert torch.allclose(walk[1:22], axis_angle_to_matrix(torch.from_numpy(poses[0, 3:66]).reshape(21, 3)), atol=1e-6)
    assert torch.allclose(walk[22:], torch.eye(3).expand(2, 3, 3))
    rot, b = prior.sample(64, torch.Generator().manual_seed(0))
    _assert_rotations(rot)
    assert b.shape == (64, 10)


def test_amass_prior_turns_world_up_into_camera_up(tmp_path: Path) -> None:
    # AMASS's world is z-up: a root rotation of +90° about x stands the body's y axis along world z. That
    # upright frame must come out upright in the camera (body up = image up), whatever the random heading.
    poses = np.zeros((1, 156), np.float32)
    poses[0, 0] = math.pi / 2
    np.savez(tmp_path / "stand.npz", poses=poses, betas=np.zeros(10, np.float32))
    rot, _ = AMASSPrior(tmp_path).sample(32, torch.Generator().manual_seed(0))
    assert torch.allclose(_upright(rot[:, 0]), torch.ones(32), atol=1e-5)


def test_prior_folder_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="body.prior_path .*not a folder"):
        AMASSPrior(tmp_path / "missing")
    with pytest.raises(UserError, match="no .npz files"):
        AMASSPrior(tmp_path)
    (tmp_path / "bad.npz").write_bytes(b"nonsense")
    with pytest.raises(UserError, match="none of its 1 .npz files"):
        AMASSPrior(tmp_path)


def test_load_prior_follows_the_config(tmp_path: Path) -> None:
    assert isinstance(load_prior(BodyConfig()), StandinPrior)
    _amass_file(tmp_path / "a.npz", frames=10, seed=0)
    prior = load_prior(BodyConfig(prior_path=str(tmp_path), prior_frame_stride=5, num_betas=8))
    assert isinstance(prior, AMASSPrior) and len(prior) == 2 and prior.sample(3)[1].shape == (3, 8)
