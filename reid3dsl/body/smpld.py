"""SMPL+D: smplx's SMPL with a per-vertex displacement, and the loader that picks the body model.

M(beta, theta, delta) = LBS(T(beta, theta) + delta, J(beta), theta, W): the displacement delta is added to
the shaped template after the joints are regressed (so delta changes the surface, never the skeleton),
then the pose blend shapes and linear blend skinning of smplx's model are applied. The keypoints are
COCO-17: nose, eyes and ears are vertices (smplx's vertex-joint selector: for real SMPL smplx's own
vertex ids, for the stand-in the ids in its vertex_ids.json), shoulders, elbows, wrists, hips, knees and
ankles are SMPL joints 16/17, 18/19, 20/21, 1/2, 4/5, 7/8 (constants.COCO17_FROM_SMPLX).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from reid3dsl.body.constants import BODY_PARTS, COCO17_FROM_SMPLX, JOINT, NUM_JOINTS
from reid3dsl.config import BodyConfig
from reid3dsl.errors import UserError

log = logging.getLogger(__name__)


class BodyOutput(NamedTuple):
    """vertices (B, V, 3), joints (B, 24, 3) and COCO-17 keypoints (B, 17, 3), in body coordinates."""

    vertices: torch.Tensor
    joints: torch.Tensor
    keypoints: torch.Tensor


class SMPLD(nn.Module):
    """SMPL with per-vertex displacements on top of a loaded smplx SMPL model (buffers only, no parameters)."""

    def __init__(self, smpl: nn.Module) -> None:
        super().__init__()
        self.smpl = smpl

    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) long."""
        return self.smpl.faces_tensor

    @property
    def num_vertices(self) -> int:
        return int(self.smpl.v_template.shape[0])

    @property
    def template(self) -> torch.Tensor:
        """The mean body in the rest pose, (V, 3), y up."""
        return self.smpl.v_template

    @property
    def num_betas(self) -> int:
        return int(self.smpl.num_betas)

    def forward(self, betas: torch.Tensor, pose: torch.Tensor, displacement: torch.Tensor | None = None) -> BodyOutput:
        """betas (B, NB), pose (B, 24, 3, 3) rotation matrices (global orientation first), displacement
        (B, V, 3) or None → BodyOutput. Always computed in fp32 (autocast off) on the inputs' device."""
        from smplx.lbs import batch_rigid_transform, blend_shapes, vertices2joints

        m = self.smpl
        with torch.autocast(device_type=betas.device.type, enabled=False):
            betas, pose = betas.float(), pose.float()
            b = betas.shape[0]
            v_shaped = m.v_template + blend_shapes(betas, m.shapedirs)  # (B, V, 3)
            joints = vertices2joints(m.J_regressor, v_shaped)  # J(beta): before the displacement
            if displacement is not None:
                v_shaped = v_shaped + displacement.float()
            eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
            pose_offsets = ((pose[:, 1:] - eye).reshape(b, -1) @ m.posedirs).reshape(b, -1, 3)
            v_posed = v_shaped + pose_offsets
            posed_joints, transforms = batch_rigid_transform(pose, joints, m.parents, dtype=pose.dtype)
            skin = (m.lbs_weights @ transforms.reshape(b, NUM_JOINTS, 16)).reshape(b, -1, 4, 4)
            vertices = (skin[..., :3, :3] @ v_posed[..., None])[..., 0] + skin[..., :3, 3]
            extended = m.vertex_joint_selector(vertices, posed_joints)  # (B, 45, 3)
        return BodyOutput(vertices, posed_joints, extended[:, list(COCO17_FROM_SMPLX)])

    def part_vertex_groups(self, num_parts: int) -> list[torch.Tensor]:
        """Disjoint vertex index groups (LongTensors) covering the mesh, one per body part: each vertex goes
        to the part of its most weighted joint (constants.BODY_PARTS lists the supported numbers of parts)."""
        if num_parts not in BODY_PARTS:
            raise UserError(f"model.num_parts = {num_parts}: expected one of {', '.join(map(str, BODY_PARTS))}")
        owner = self.smpl.lbs_weights.argmax(dim=1)
        groups = []
        for name, joint_names in BODY_PARTS[num_parts]:
            joints = torch.tensor([JOINT[j] for j in joint_names], device=owner.device)
            idx = torch.nonzero(torch.isin(owner, joints), as_tuple=False).flatten()
            if idx.numel() == 0:
                raise UserError(f"body model: no vertex is skinned mainly to the {name} ({', '.join(joint_names)})")
            groups.append(idx)
        return groups


def _resolve_model_file(model_path: str) -> Path:
    p = Path(model_path)
    if p.is_dir():
        # The converter's pickle-free .npz first, in the folder smplx.create expects and beside it.
        for cand in (p / "smpl" / "SMPL_NEUTRAL.npz", p / "smpl" / "SMPL_NEUTRAL.pkl",
                     p / "SMPL_NEUTRAL.npz", p / "SMPL_NEUTRAL.pkl"):
            if cand.is_file():
                return cand
        raise UserError(f"body.model_path '{p}': no SMPL_NEUTRAL.npz or SMPL_NEUTRAL.pkl in it or in its smpl/ "
                        "folder (expected a SMPL file or a folder holding smpl/SMPL_NEUTRAL.npz)")
    if not p.is_file():
        raise UserError(f"body.model_path '{p}': not found (expected a SMPL .npz or .pkl, or a folder holding "
                        "smpl/SMPL_NEUTRAL.npz)")
    return p


def _create(path: Path, label: str, num_betas: int, vertex_ids: dict[str, int] | None) -> nn.Module:
    import smplx
    from smplx.utils import Struct

    from reid3dsl.body.convert import read_smpl

    # smplx would unpickle the file itself (any code in it would run): it gets the arrays read by read_smpl.
    data = Struct(**read_smpl(path, label))
    # smplx prints a warning about 10-component models to stdout; keep it in the log instead.
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            model = smplx.SMPL(str(path), data_struct=data, num_betas=num_betas, vertex_ids=vertex_ids,
                               create_betas=False, create_global_orient=False, create_body_pose=False,
                               create_transl=False)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # A readable file of something else (keys missing, wrong shapes): smplx fails deep inside.
        raise UserError(f"{label}: not a SMPL model ({type(exc).__name__}: {exc}); expected arrays "
                        "v_template, shapedirs, posedirs, J_regressor, weights, kintree_table, f") from None
    if out.getvalue().strip():
        log.info("smplx: %s", out.getvalue().strip())
    return model


def load_body_model(cfg: BodyConfig) -> SMPLD:
    """The body model of `cfg`: the SMPL file at body.model_path (.npz, or a pickle read by
    `convert.read_smpl`'s allow-list), else the stand-in in body.standin_dir (generated there first if
    missing). A vertex_ids.json beside the file replaces smplx's vertex ids."""
    from reid3dsl.body.standin import ensure_standin, standin_paths

    if cfg.model_path:
        path = _resolve_model_file(cfg.model_path)
        label = f"body.model_path '{path}'"
    else:
        path = standin_paths(ensure_standin(cfg.standin_dir, cfg.standin_resolution, cfg.standin_seed))[0]
        label = f"stand-in body '{path}'"
    ids_path = path.parent / "vertex_ids.json"
    vertex_ids = None
    if ids_path.is_file():
        try:
            vertex_ids = {k: int(v) for k, v in json.loads(ids_path.read_text()).items()}
        except (ValueError, TypeError, AttributeError):
            raise UserError(f"{ids_path}: expected a JSON object of vertex indices") from None
    model = _create(path, label, cfg.num_betas, vertex_ids)
    num_vertices = int(model.v_template.shape[0])
    if model.num_betas < cfg.num_betas:
        raise UserError(f"body.num_betas = {cfg.num_betas}: the body model '{path}' has only {model.num_betas} "
                        "shape components")
    if int(model.vertex_joint_selector.extra_joints_idxs.max()) >= num_vertices:
        raise UserError(f"body model '{path}': {num_vertices} vertices, but its extra keypoints use smplx's SMPL "
                        f"vertex ids; put a vertex_ids.json for this mesh beside it")
    return SMPLD(model)
