"""The projection losses can train the 3D stream: fitting (beta, theta, psi) to a silhouette and keypoints."""

from __future__ import annotations

import pytest
import torch

from reid3dsl import losses
from reid3dsl.body.camera import normalized_focal, project_points, weak_perspective_to_translation
from reid3dsl.body.prior import StandinPrior
from reid3dsl.body.render import SilhouetteRenderer
from reid3dsl.body.smpld import load_body_model
from reid3dsl.config import BodyConfig


@pytest.mark.slow
def test_silhouette_and_keypoint_losses_recover_shape_pose_and_camera(standin_dir: str) -> None:
    from pytorch3d.transforms import axis_angle_to_matrix

    cfg = BodyConfig(standin_dir=standin_dir)
    body = load_body_model(cfg)
    renderer = SilhouetteRenderer(cfg)
    f = normalized_focal(cfg.focal_length, cfg.focal_res)
    sil_size, kp_size = (64, 32), (128, 64)
    g = torch.Generator().manual_seed(4)
    n = 2
    rot_true, _ = StandinPrior().sample(n, g)
    beta_true = torch.randn(n, 10, generator=g)
    psi_true = torch.tensor([[0.9, 0.02, -0.03]]).expand(n, 3)
    with torch.no_grad():
        target = body(beta_true, rot_true)
        cam_true = weak_perspective_to_translation(psi_true, f)
        target_sil = (renderer.render(target.vertices, body.faces, cam_true, sil_size) > 0.5).float()
        target_kp = torch.cat([project_points(target.keypoints, cam_true, kp_size, f), torch.ones(n, 17, 1)], -1)

    # Perturbed start: mean shape, every joint rotated by ~10 degrees, camera scaled and shifted.
    rot_start = rot_true @ axis_angle_to_matrix(torch.deg2rad(torch.tensor(10.0)) * torch.randn(n, 24, 3, generator=g))
    d_theta = torch.zeros(n, 24, 3, requires_grad=True)
    beta = torch.zeros(n, 10, requires_grad=True)
    psi = (psi_true + torch.tensor([0.08, 0.04, -0.04])).clone().requires_grad_(True)
    steps = 60
    opt = torch.optim.Adam([d_theta, beta, psi], lr=0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.0025)

    def loss_and_iou() -> tuple[torch.Tensor, torch.Tensor]:
        out = body(beta, rot_start @ axis_angle_to_matrix(d_theta))
        cam = weak_perspective_to_translation(psi, f)
        sil = renderer.render(out.vertices, body.faces, cam, sil_size)
        kp = project_points(out.keypoints, cam, kp_size, f)
        # keypoints weighted up: in normalised units their squared error is ~10x smaller than the mask's
        loss = 10.0 * losses.keypoint_loss(kp, target_kp, kp_size) + losses.silhouette_loss(sil, target_sil)
        hard = sil.detach() > 0.5
        iou = (hard & (target_sil > 0)).sum((1, 2)) / (hard | (target_sil > 0)).sum((1, 2))
        return loss, iou

    first, first_iou = (x.detach() for x in loss_and_iou())
    for _ in range(steps):
        loss, _ = loss_and_iou()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    last, iou = (x.detach() for x in loss_and_iou())
    assert float(last) <= 0.2 * float(first), f"loss {float(first):.4f} → {float(last):.4f}: expected a cut of >= 80 %"
    assert (iou >= 0.8).all() and (iou > first_iou).all(), f"silhouette IoU {first_iou.tolist()} → {iou.tolist()}"
