"""SMPL+D: the smplx body with displacements, its keypoints and body parts, and the loader's choices."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch

from reid3dsl.body.constants import BODY_PARTS, COCO17_FROM_SMPLX, JOINT
from reid3dsl.body.prior import StandinPrior
from reid3dsl.body.smpld import SMPLD, load_body_model
from reid3dsl.body.standin import standin_paths
from reid3dsl.config import BodyConfig
from reid3dsl.errors import UserError


@pytest.fixture(scope="module")
def body(standin_dir: str) -> SMPLD:
    return load_body_model(BodyConfig(standin_dir=standin_dir))


def test_zero_pose_and_mean_shape_give_the_regressor_joints(body: SMPLD) -> None:
    out = body(torch.zeros(2, 10), torch.eye(3).expand(2, 24, 3, 3))
    smpl = body.smpl
    assert out.vertices.shape == (2, body.num_vertices, 3)
    assert out.joints.shape == (2, 24, 3) and out.keypoints.shape == (2, 17, 3)
    assert torch.allclose(out.vertices[0], smpl.v_template, atol=1e-6)
    assert torch.allclose(out.joints[0], smpl.J_regressor @ smpl.v_template, atol=1e-5)


def test_displacement_moves_exactly_the_vertices_it_is_nonzero_on(body: SMPLD) -> None:
    rot, betas = StandinPrior().sample(3, torch.Generator().manual_seed(0))
    delta = torch.zeros(3, body.num_vertices, 3)
    chosen = torch.tensor([5, 100, 333, body.num_vertices - 1])
    delta[:, chosen] = torch.tensor([0.01, -0.02, 0.03])
    plain, displaced = body(betas, rot), body(betas, rot, delta)
    moved = (displaced.vertices - plain.vertices).norm(dim=-1) > 1e-6
    expected = torch.zeros(3, body.num_vertices, dtype=torch.bool)
    expected[:, chosen] = True
    assert torch.equal(moved, expected)
    assert torch.equal(displaced.joints, plain.joints), "displacements must not move the skeleton"


def test_keypoints_are_coco17_from_joints_and_face_vertices(body: SMPLD) -> None:
    rot, betas = StandinPrior().sample(2, torch.Generator().manual_seed(1))
    out = body(betas, rot)
    smpl_joint = {5: "left_shoulder", 6: "right_shoulder", 9: "left_wrist", 12: "right_hip", 16: "right_ankle"}
    for coco, name in smpl_joint.items():
        assert torch.equal(out.keypoints[:, coco], out.joints[:, JOINT[name]])
    nose_vertex = int(body.smpl.vertex_joint_selector.extra_joints_idxs[COCO17_FROM_SMPLX[0] - 24])
    assert torch.equal(out.keypoints[:, 0], out.vertices[:, nose_vertex])


def test_part_vertex_groups_are_disjoint_and_cover_the_body(body: SMPLD) -> None:
    for n in BODY_PARTS:
        groups = body.part_vertex_groups(n)
        assert len(groups) == n and all(g.numel() > 0 and g.dtype == torch.long for g in groups)
        together = torch.cat(groups)
        assert together.numel() == body.num_vertices == torch.unique(together).numel()
    head, torso, left_arm, right_arm, left_leg, right_leg = body.part_vertex_groups(6)
    v = body.smpl.v_template
    assert v[head, 1].mean() > v[torso, 1].mean() > v[left_leg, 1].mean()
    assert v[left_arm, 0].mean() > 0.3 and v[right_arm, 0].mean() < -0.3
    with pytest.raises(UserError, match="model.num_parts = 5"):
        body.part_vertex_groups(5)


def test_body_is_computed_in_fp32_inside_autocast(body: SMPLD) -> None:
    betas = torch.zeros(1, 10, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = body(betas, torch.eye(3).expand(1, 24, 3, 3))
    assert out.vertices.dtype == torch.float32
    out.vertices.sum().backward()
    assert betas.grad is not None and torch.isfinite(betas.grad).all()


def test_loader_reads_a_model_folder_or_file_and_explains_bad_paths(standin_dir: str, tmp_path: Path) -> None:
    model = load_body_model(BodyConfig(model_path=standin_dir))  # a folder holding smpl/SMPL_NEUTRAL.pkl
    assert model.num_vertices > 0
    with pytest.raises(UserError, match="body.model_path .*not found"):
        load_body_model(BodyConfig(model_path=str(tmp_path / "nope.pkl")))
    # a mesh that is not SMPL's, without its vertex ids, cannot use smplx's default ids
    lone = tmp_path / "basicmodel_neutral.pkl"
    shutil.copy(standin_paths(standin_dir)[0], lone)
    with pytest.raises(UserError, match="vertex_ids.json"):
        load_body_model(BodyConfig(model_path=str(lone)))
    with pytest.raises(UserError, match="body.num_betas = 20"):
        load_body_model(BodyConfig(standin_dir=standin_dir, num_betas=20))
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="not a readable SMPL pickle"):
        load_body_model(BodyConfig(model_path=str(garbage)))


def test_loader_generates_the_standin_when_missing(tmp_path: Path) -> None:
    body = load_body_model(BodyConfig(standin_dir=str(tmp_path / "body")))
    with open(standin_paths(tmp_path / "body")[0], "rb") as fh:
        assert pickle.load(fh)["v_template"].shape == (body.num_vertices, 3)
