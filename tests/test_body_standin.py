"""The stand-in body: an SMPL-format file that plain smplx loads, shaped and rigged like a person."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from reid3dsl.body.constants import JOINT, SMPL_PARENTS, SMPLX_EXTRA_JOINT_KEYS
from reid3dsl.body.standin import ensure_standin, generate, main, standin_paths


def _smpl(standin_dir: str) -> dict:
    with open(standin_paths(standin_dir)[0], "rb") as fh:
        return pickle.load(fh)


def test_plain_smplx_loads_the_generated_file_with_its_vertex_ids(standin_dir: str) -> None:
    import smplx

    ids = json.loads(standin_paths(standin_dir)[1].read_text())
    assert set(ids) == set(SMPLX_EXTRA_JOINT_KEYS)
    model = smplx.create(standin_dir, model_type="smpl", vertex_ids=ids)
    out = model()
    d = _smpl(standin_dir)
    v = d["v_template"].shape[0]
    assert d["shapedirs"].shape == (v, 3, 10)
    assert d["posedirs"].shape == (v, 3, 207)
    assert d["J_regressor"].shape == (24, v)
    assert d["weights"].shape == (v, 24)
    assert d["kintree_table"].shape == (2, 24)
    assert 1000 <= d["f"].shape[0] <= 2000, "the low-resolution body is for CPU work: 1-2k faces"
    assert [-1, *d["kintree_table"][0, 1:].tolist()] == list(SMPL_PARENTS)
    assert out.vertices.shape == (1, v, 3) and out.joints.shape == (1, 45, 3)
    assert np.allclose(d["weights"].sum(1), 1.0) and (d["weights"] >= 0).all()


def test_standin_is_a_closed_outward_oriented_surface(standin_dir: str) -> None:
    d = _smpl(standin_dir)
    f = d["f"].astype(np.int64)
    half = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    edges = {tuple(e) for e in half.tolist()}
    assert len(edges) == len(half), "an edge is used twice in the same direction"
    assert all((b, a) in edges for a, b in edges), "the surface has a hole"
    v = d["v_template"]
    volume = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
    assert 0.04 < volume < 0.1, f"volume {volume:.3f} m^3: expected a person's (about 0.065) and outward normals"


def test_standin_is_a_person_in_smpl_rest_pose(standin_dir: str) -> None:
    d = _smpl(standin_dir)
    v, j = d["v_template"], d["J_regressor"] @ d["v_template"]
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.6 < height < 1.8
    assert j[JOINT["head"], 1] > j[JOINT["neck"], 1] > j[JOINT["pelvis"], 1] > j[JOINT["left_knee"], 1]
    assert j[JOINT["left_knee"], 1] > j[JOINT["left_ankle"], 1]
    # T-pose with the subject's left at +x, like SMPL
    assert j[JOINT["left_wrist"], 0] > j[JOINT["left_elbow"], 0] > j[JOINT["left_shoulder"], 0] > 0.1
    assert j[JOINT["right_wrist"], 0] < -0.6
    span = v[:, 0].max() - v[:, 0].min()
    assert 1.5 < span < 1.9, "arm span about the stature"
    # toes point forward (+z)
    ids = json.loads(standin_paths(standin_dir)[1].read_text())
    assert v[ids["LBigToe"], 2] > v[ids["LHeel"], 2] + 0.15
    assert v[ids["nose"], 2] > v[ids["lear"], 2] and v[ids["leye"], 0] > 0 > v[ids["reye"], 0]


def test_joint_regressor_reproduces_the_skeleton_and_follows_the_shape(standin_dir: str) -> None:
    d = _smpl(standin_dir)
    j0 = d["J_regressor"] @ d["v_template"]
    assert np.allclose(j0, d["J"])
    # a taller body (first component) has its head higher and ankles lower, and every joint stays inside
    # the span of its nearby vertices
    tall = d["v_template"] + d["shapedirs"] @ np.eye(10)[0] * 2.0
    j_tall = d["J_regressor"] @ tall
    stretch = np.sign(j_tall[JOINT["head"], 1] - j_tall[JOINT["left_ankle"], 1] - (j0[JOINT["head"], 1] - j0[
        JOINT["left_ankle"], 1]))
    height_change = (tall[:, 1].max() - tall[:, 1].min()) - (d["v_template"][:, 1].max() - d["v_template"][:, 1].min())
    assert stretch == np.sign(height_change) and abs(height_change) > 0.05
    for j in range(24):
        near = tall[np.argsort(np.linalg.norm(tall - j_tall[j], axis=1))[:24]]
        assert (near.min(0) - 0.02 <= j_tall[j]).all() and (j_tall[j] <= near.max(0) + 0.02).all()


def test_shape_components_change_stature_limbs_girth_and_widths(standin_dir: str) -> None:
    import smplx

    from reid3dsl.body.smpld import SMPLD

    d = _smpl(standin_dir)
    ids = json.loads(standin_paths(standin_dir)[1].read_text())
    body = SMPLD(smplx.create(standin_dir, model_type="smpl", vertex_ids=ids))
    rest = torch.eye(3).expand(1, 24, 3, 3)

    def measures(betas: torch.Tensor) -> torch.Tensor:
        out = body(betas[None], rest)
        v, j = out.vertices[0], out.joints[0]
        waist = v[((v[:, 1] - j[JOINT["spine1"], 1]).abs() < 0.03) & (v[:, 0].abs() < 0.25)]
        return torch.stack([
            v[:, 1].max() - v[:, 1].min(),
            (j[JOINT["left_wrist"]] - j[JOINT["left_shoulder"]]).norm(),
            (j[JOINT["left_ankle"]] - j[JOINT["left_hip"]]).norm(),
            waist[:, 0].max() - waist[:, 0].min(),
            (j[JOINT["left_shoulder"]] - j[JOINT["right_shoulder"]]).norm(),
            (j[JOINT["left_hip"]] - j[JOINT["right_hip"]]).norm(),
        ])

    change = torch.stack([measures(2 * torch.eye(10)[k]) - measures(-2 * torch.eye(10)[k]) for k in range(10)]).abs()
    most = change.max(dim=0).values  # the largest change of each measure over the components (+-2 sd)
    assert d["shapedirs"].shape[-1] >= 10
    names = ("stature", "arm length", "leg length", "waist width", "shoulder width", "hip width")
    needed = (0.10, 0.04, 0.04, 0.05, 0.03, 0.02)
    for name, got, want in zip(names, most.tolist(), needed, strict=True):
        assert got > want, f"{name}: at most {got:.3f} m between -2 and +2 sd, expected > {want}"


def test_limbs_bend_at_their_joints_and_the_rest_stays(standin_dir: str) -> None:
    import smplx
    from pytorch3d.transforms import axis_angle_to_matrix

    from reid3dsl.body.smpld import SMPLD

    ids = json.loads(standin_paths(standin_dir)[1].read_text())
    body = SMPLD(smplx.create(standin_dir, model_type="smpl", vertex_ids=ids))
    rest = torch.eye(3).expand(1, 24, 3, 3).clone()
    bent = rest.clone()
    bent[0, JOINT["left_knee"]] = axis_angle_to_matrix(torch.tensor([1.5708, 0.0, 0.0]))  # 90° flexion
    bent[0, JOINT["right_elbow"]] = axis_angle_to_matrix(torch.tensor([0.0, 1.5708, 0.0]))
    betas = torch.zeros(1, 10)
    a, b = body(betas, rest), body(betas, bent)
    knee, ankle = b.joints[0, JOINT["left_knee"]], b.joints[0, JOINT["left_ankle"]]
    assert torch.allclose(knee, a.joints[0, JOINT["left_knee"]])
    assert abs(float(ankle[1] - knee[1])) < 0.05 and float(knee[2] - ankle[2]) > 0.3, "the shin swings backwards"
    elbow, wrist = b.joints[0, JOINT["right_elbow"]], b.joints[0, JOINT["right_wrist"]]
    assert float(wrist[2] - elbow[2]) > 0.2, "the forearm swings forwards"
    moved = (b.vertices[0] - a.vertices[0]).norm(dim=1) > 1e-6
    weights = body.smpl.lbs_weights
    chain = [JOINT[n] for n in ("left_knee", "left_ankle", "left_foot", "right_elbow", "right_wrist", "right_hand")]
    assert torch.equal(moved, weights[:, chain].sum(1) > 0), "exactly the vertices skinned below the bent joints move"
    assert int(moved.sum()) > 40


def test_generation_is_deterministic_by_seed_and_cached(standin_dir: str, tmp_path: Path) -> None:
    cached = _smpl(standin_dir)
    again = generate("low", 0).smpl
    assert all(np.array_equal(np.asarray(cached[k]), np.asarray(again[k])) for k in ("v_template", "shapedirs", "f"))
    other = generate("low", 1).smpl
    assert np.array_equal(other["f"], cached["f"]) and not np.allclose(other["shapedirs"], cached["shapedirs"])
    pkl = standin_paths(standin_dir)[0]
    stamp = os.stat(pkl).st_mtime_ns
    assert ensure_standin(standin_dir, "low", 0) == Path(standin_dir)
    assert os.stat(pkl).st_mtime_ns == stamp, "a present stand-in must not be regenerated"


def test_standin_cli_reports_the_model(standin_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--out", standin_dir])
    out = capsys.readouterr().out
    assert "SMPL_NEUTRAL.pkl" in out and "vertices" in out and "10 shape components" in out
