"""Camera, keypoint projection and the two renderers: one convention, so keypoints and silhouettes line up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reid3dsl import losses
from reid3dsl.body.camera import normalized_focal, project_points, weak_perspective_to_translation
from reid3dsl.body.prior import StandinPrior
from reid3dsl.body.render import SHARP_BLUR_PX, SilhouetteRenderer, TexturedRenderer
from reid3dsl.body.smpld import SMPLD, load_body_model
from reid3dsl.config import BodyConfig


@pytest.fixture(scope="module")
def cfg(standin_dir: str) -> BodyConfig:
    return BodyConfig(standin_dir=standin_dir)


@pytest.fixture(scope="module")
def body(cfg: BodyConfig) -> SMPLD:
    return load_body_model(cfg)


def _people(body: SMPLD, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vertices (n, V, 3), keypoints (n, 17, 3) and cam_t (n, 3) of prior people framed in the crop."""
    g = torch.Generator().manual_seed(seed)
    rot, betas = StandinPrior().sample(n, g)
    out = body(betas, rot)
    psi = torch.stack([0.8 + 0.15 * torch.rand(n, generator=g), 0.1 * torch.rand(n, generator=g) - 0.05,
                       0.1 * torch.rand(n, generator=g) - 0.05], dim=1)
    return out.vertices, out.keypoints, weak_perspective_to_translation(psi, normalized_focal(5000.0, 224.0))


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a > 0.5, b > 0.5
    return (a & b).sum((-2, -1)).float() / (a | b).sum((-2, -1)).float()


def test_projection_and_renderer_share_the_pixel_convention() -> None:
    # A rectangle whose corners project to pixel boundaries covers exactly those pixels, in a 2:1 crop.
    r = SilhouetteRenderer(BodyConfig(sil_blur_px=0.01))
    h, w, z = 16, 8, 40.0
    corners_px = torch.tensor([[2.0, 3.0], [5.0, 3.0], [5.0, 9.0], [2.0, 9.0]])
    xy = (corners_px - torch.tensor([w / 2, h / 2])) / (h / 2) * z / r.focal
    verts = torch.cat([xy, torch.zeros(4, 1)], dim=1)[None]
    cam_t = torch.tensor([[0.0, 0.0, z]])
    assert torch.allclose(project_points(verts, cam_t, (h, w), r.focal)[0], corners_px, atol=1e-4)
    sil = r.render(verts, torch.tensor([[0, 1, 2], [0, 2, 3]]), cam_t, (h, w))[0] > 0.5
    expected = torch.zeros(h, w, dtype=torch.bool)
    expected[3:9, 2:5] = True
    assert torch.equal(sil, expected)


def test_same_psi_gives_consistent_keypoints_and_silhouettes_across_sizes(body: SMPLD, cfg: BodyConfig) -> None:
    verts, kp, cam_t = _people(body, 4, seed=3)
    f = normalized_focal(cfg.focal_length, cfg.focal_res)
    assert torch.allclose(project_points(kp, cam_t, (128, 64), f), 2 * project_points(kp, cam_t, (64, 32), f),
                          atol=1e-3)
    r = SilhouetteRenderer(cfg)
    big = F.avg_pool2d(r.render(verts, body.faces, cam_t, (128, 64), SHARP_BLUR_PX)[:, None], 2)[:, 0]
    small = r.render(verts, body.faces, cam_t, (64, 32), SHARP_BLUR_PX)
    assert (_iou(big, small) > 0.85).all()
    odd = r.render(verts, body.faces, cam_t, (48, 20))  # any crop size works
    assert odd.shape == (4, 48, 20) and odd.max() > 0.9


def test_weak_perspective_scale_is_what_the_camera_projects(body: SMPLD, cfg: BodyConfig) -> None:
    f = normalized_focal(cfg.focal_length, cfg.focal_res)
    psi = torch.tensor([[0.9, 0.05, -0.1]])
    points = torch.tensor([[[0.2, -0.5, 0.0], [-0.3, 0.7, 0.1]]])
    px = project_points(points, weak_perspective_to_translation(psi, f), (128, 64), f)
    weak = psi[:, :1, None] * (points[..., :2] + psi[:, None, 1:])  # normalised coordinates, height = [-1, 1]
    assert torch.allclose(px, torch.tensor([32.0, 64.0]) + 64.0 * weak, atol=0.2)  # within a fifth of a pixel


def test_projected_keypoints_fall_inside_the_rendered_silhouette(body: SMPLD, cfg: BodyConfig) -> None:
    verts, kp3d, cam_t = _people(body, 12, seed=4)
    size = (128, 64)
    sil = SilhouetteRenderer(cfg).render(verts, body.faces, cam_t, size)
    kp = project_points(kp3d, cam_t, size, normalized_focal(cfg.focal_length, cfg.focal_res))
    inside_crop = (kp[..., 0] >= 0) & (kp[..., 0] < size[1]) & (kp[..., 1] >= 0) & (kp[..., 1] < size[0])
    cols, rows = kp[..., 0].long().clamp(0, size[1] - 1), kp[..., 1].long().clamp(0, size[0] - 1)
    on_body = sil[torch.arange(12)[:, None], rows, cols] > 0.5
    assert inside_crop.float().mean() > 0.95
    # Nose, ears and shoulders lie on the outline in some views: 94.6 % of these keypoints fall on the hard mask.
    assert (on_body & inside_crop).sum() >= 0.9 * inside_crop.sum()
    hard = TexturedRenderer(cfg).render(verts, body.faces, torch.ones_like(verts), cam_t, size).mask
    assert torch.equal(on_body, hard[torch.arange(12)[:, None], rows, cols])


def test_distinct_betas_give_distinct_silhouettes(body: SMPLD, cfg: BodyConfig) -> None:
    n = 12
    g = torch.Generator().manual_seed(5)
    rot, _ = StandinPrior().sample(1, g)
    betas = torch.randn(n, 10, generator=g)
    cam_t = weak_perspective_to_translation(torch.tensor([[0.9, 0.0, 0.0]]).expand(n, 3),
                                            normalized_focal(cfg.focal_length, cfg.focal_res))
    sil = SilhouetteRenderer(cfg).render(body(betas, rot.expand(n, -1, -1, -1)).vertices, body.faces, cam_t, (64, 32),
                                         SHARP_BLUR_PX)
    iou = _iou(sil[:, None], sil[None])
    # beta ~ N(0, I) identities are typically far apart (median distance ~4.5); those that are, are told
    # apart by their silhouettes alone
    distinct = torch.cdist(betas, betas) > 3.5
    assert distinct.sum() > n * (n - 1) / 2
    # (sharp silhouettes: the largest IoU of such a pair was 0.92 here, so 64x32 silhouettes alone leave some of
    # them close, as real people are)
    assert (iou[distinct] < 0.95).all(), f"max IoU between distinct identities {iou[distinct].max():.3f}"
    others = ~torch.eye(n, dtype=torch.bool)
    assert float(iou[others].median()) < 0.75


def test_projection_losses_have_gradients_for_beta_theta_delta_and_psi(body: SMPLD, cfg: BodyConfig) -> None:
    from pytorch3d.transforms import axis_angle_to_matrix

    g = torch.Generator().manual_seed(6)
    rot0, _ = StandinPrior().sample(2, g)
    betas = torch.zeros(2, 10, requires_grad=True)
    theta = torch.zeros(2, 24, 3, requires_grad=True)
    delta = torch.zeros(2, body.num_vertices, 3, requires_grad=True)
    psi = torch.tensor([[0.9, 0.0, 0.0], [0.8, 0.02, -0.03]], requires_grad=True)
    f = normalized_focal(cfg.focal_length, cfg.focal_res)
    out = body(betas, rot0 @ axis_angle_to_matrix(theta), delta)
    cam_t = weak_perspective_to_translation(psi, f)
    sil = SilhouetteRenderer(cfg).render(out.vertices, body.faces, cam_t, (32, 16))
    kp = project_points(out.keypoints, cam_t, (128, 64), f)
    target_sil = torch.zeros_like(sil)
    target_sil[:, 4:28, 4:12] = 1.0
    target_kp = torch.cat([kp.detach() + 3.0, torch.ones(2, 17, 1)], dim=-1)
    for loss in (losses.silhouette_loss(sil, target_sil), losses.keypoint_loss(kp, target_kp, (128, 64))):
        grads = torch.autograd.grad(loss, (betas, theta, delta, psi), retain_graph=True, allow_unused=True)
        for name, grad in zip(("beta", "theta", "psi"), (grads[0], grads[1], grads[3]), strict=True):
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    delta_grad = torch.autograd.grad(losses.silhouette_loss(sil, target_sil), delta)[0]
    assert torch.isfinite(delta_grad).all() and delta_grad.abs().sum() > 0


def test_silhouettes_are_fp32_inside_autocast(body: SMPLD, cfg: BodyConfig) -> None:
    verts, _, cam_t = _people(body, 2, seed=7)
    verts = verts.detach().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sil = SilhouetteRenderer(cfg).render(verts, body.faces, cam_t, (32, 16))
    assert sil.dtype == torch.float32 and 0.0 <= float(sil.detach().min()) and float(sil.detach().max()) <= 1.0
    sil.sum().backward()
    assert verts.grad is not None and torch.isfinite(verts.grad).all()


def test_textured_renderer_gives_rgb_mask_and_shard_keypoints(body: SMPLD, cfg: BodyConfig) -> None:
    verts, kp3d, cam_t = _people(body, 3, seed=8)
    colors = torch.rand(3, body.num_vertices, 3, generator=torch.Generator().manual_seed(0))
    cam_t[2, 0] = 2.0  # push the third person out of the crop to the right
    img = TexturedRenderer(cfg).render(verts, body.faces, colors, cam_t, (128, 64), keypoints=kp3d,
                                       light_location=(0.0, -1.0, 0.0), background=(0.0, 1.0, 0.0))
    assert img.rgb.shape == (3, 128, 64, 3) and img.mask.dtype == torch.bool and img.keypoints.shape == (3, 17, 3)
    assert torch.equal(img.rgb[~img.mask], torch.tensor([0.0, 1.0, 0.0]).expand(int((~img.mask).sum()), 3))
    # same camera: the hard mask lies inside the soft silhouette, which is at most a pixel wider (its blur)
    soft = SilhouetteRenderer(cfg).render(verts, body.faces, cam_t, (128, 64)) > 0.5
    hard = img.mask
    grown = F.max_pool2d(hard.float()[:, None], 3, stride=1, padding=1)[:, 0] > 0
    assert (soft[hard]).float().mean() > 0.99 and not (soft & ~grown).any()
    # keypoints as in shards: pixels of the crop, confidence 1 inside it and 0 outside
    xy = project_points(kp3d, cam_t, (128, 64), normalized_focal(cfg.focal_length, cfg.focal_res))
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < 64) & (xy[..., 1] >= 0) & (xy[..., 1] < 128)
    assert torch.allclose(img.keypoints[..., :2], xy) and torch.equal(img.keypoints[..., 2], inside.float())
    assert float(img.keypoints[:2, :, 2].mean()) > 0.9 and not inside[2].any()


@pytest.mark.parametrize("size", [(64, 32), (128, 64)])
def test_the_silhouette_loss_is_smallest_for_the_body_at_its_true_size(body: SMPLD, cfg: BodyConfig,
                                                                       size: tuple[int, int]) -> None:
    # The data's masks are hard renders of the body. Blending every face near the outline (pytorch3d's shader)
    # made the soft silhouette 1.27x the mask's area at 64x32 and the loss smallest for a body ~3 % too small,
    # which pulled limbs away from the keypoints.
    verts, kp3d, cam_t = _people(body, 4, seed=11)
    mask = TexturedRenderer(cfg).render(verts, body.faces, torch.ones_like(verts), cam_t, size).mask.float()
    renderer = SilhouetteRenderer(cfg)
    centre = verts.mean(dim=1, keepdim=True)
    scales = (0.94, 0.97, 1.0, 1.03, 1.06)
    loss = [float(losses.silhouette_loss(renderer.render(centre + k * (verts - centre), body.faces, cam_t, size),
                                         mask)) for k in scales]
    assert min(range(len(scales)), key=loss.__getitem__) == scales.index(1.0), loss
    soft = renderer.render(verts, body.faces, cam_t, size) > 0.5
    assert float(soft.sum() / mask.sum()) == pytest.approx(1.0, abs=0.06)
    assert float(_iou(soft.float(), mask).mean()) > 0.9


@pytest.mark.parametrize("size", [(16, 8), (32, 16), (64, 32), (128, 64)])
def test_a_blur_in_pixels_gives_gradients_one_pixel_off_the_edge_at_every_render_size(
    body: SMPLD, cfg: BodyConfig, size: tuple[int, int]
) -> None:
    # The configs render silhouettes from 16x8 (tests) to 64x32 (demo, paper); a blur set in NDC units reaches
    # a quarter of a pixel at the small ones, so pixels next to the edge got no gradient.
    verts, _, cam_t = _people(body, 2, seed=5)
    verts = verts.clone().requires_grad_(True)
    hard = SilhouetteRenderer(cfg).render(verts, body.faces, cam_t, size, SHARP_BLUR_PX).detach() > 0.5
    ring = (F.max_pool2d(hard[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0) & ~hard  # 1 px outside
    assert ring.sum() > 0
    soft = SilhouetteRenderer(cfg).render(verts, body.faces, cam_t, size)
    # Measured 0.79-0.86 of them with the default 1-pixel blur; the old fixed NDC blur reached none at 32x16.
    assert (soft[ring] > 1e-3).float().mean() > 0.6, "pixels next to the edge must see the body"
    (grad,) = torch.autograd.grad(soft[ring].sum(), verts)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("size", [(64, 32), (48, 48), (32, 64)])
def test_recomputed_face_distances_equal_the_rasteriser_s_and_give_its_gradient(body: SMPLD, cfg: BodyConfig,
                                                                               size: tuple[int, int]) -> None:
    # The renderer differentiates its own distances instead of the rasteriser's (slow on CPU): forward values
    # and the vertex gradient of a silhouette loss must be the rasteriser's.
    import dataclasses
    import math

    from pytorch3d.renderer import BlendParams, MeshRasterizer, RasterizationSettings, SoftSilhouetteShader

    from reid3dsl.body.camera import pytorch3d_cameras
    from reid3dsl.body.render import _CUTOFF, _meshes, blur_sigma, signed_face_dists

    verts, _, cam_t = _people(body, 3, seed=5)
    verts = verts.detach().requires_grad_()
    sigma = blur_sigma(1.5, size)
    settings = RasterizationSettings(image_size=size, blur_radius=math.log(1 / _CUTOFF - 1) * sigma,
                                     faces_per_pixel=16, bin_size=0, perspective_correct=False)
    rasterizer = MeshRasterizer(cameras=pytorch3d_cameras(cam_t, size, normalized_focal(5000.0, 224.0)),
                                raster_settings=settings)
    meshes = _meshes(verts, body.faces)
    fragments = rasterizer(meshes)
    mine = signed_face_dists(rasterizer.transform(meshes).verts_padded(), body.faces, fragments.pix_to_face)
    valid = fragments.pix_to_face >= 0
    assert valid.sum() > 1000
    torch.testing.assert_close(mine[valid], fragments.dists[valid], atol=1e-6, rtol=1e-3)
    assert ((mine > 0) == (fragments.dists > 0))[valid].all()
    shader = SoftSilhouetteShader(BlendParams(sigma=sigma, gamma=1e-4))
    target = torch.zeros(3, *size)
    target[:, size[0] // 4 :, size[1] // 4 :] = 1.0
    grads = []
    for frags in (fragments, dataclasses.replace(fragments, dists=mine)):
        loss = ((shader(frags, meshes)[..., 3] - target) ** 2).sum()
        grads.append(torch.autograd.grad(loss, verts, retain_graph=True)[0])
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5 * float(grads[0].abs().max()), rtol=1e-3)
