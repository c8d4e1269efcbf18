"""Renderers on the camera of camera.py: a differentiable soft silhouette and a textured image maker.

`SilhouetteRenderer` (pytorch3d MeshRasterizer, then `outline_alpha`; blur and faces per pixel from
`BodyConfig`) is the training-time projection: batched, any crop size, differentiable w.r.t. vertices and
camera, always computed in fp32 (autocast is switched off inside, since the soft rasteriser's distances
underflow in half precision). Its blur is set in pixels of the render (`blur_sigma`), so a small render gets
as wide an edge, in pixels, as a large one. The rasteriser picks the faces near each pixel; the pixel-to-face
distances are then recomputed from the projected vertices with torch ops (`signed_face_dists`), equal to the
rasteriser's, so autograd differentiates them: the rasteriser's own CPU backward costs ~45 µs per (pixel,
face) pair — 6.1 s for 16 bodies at 64x32 against 0.14 s this way, the same gradient (measured on this
2-core machine). `TexturedRenderer`
(MeshRenderer + HardPhongShader + TexturesVertex, a point light) makes pictures without gradients: RGB,
a hard mask and keypoints in the shard format, for the synthetic data set and for figures.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from reid3dsl.body.camera import normalized_focal, project_points, pytorch3d_cameras
from reid3dsl.config import BodyConfig


def _meshes(vertices: torch.Tensor, faces: torch.Tensor, textures=None):
    from pytorch3d.structures import Meshes

    b = vertices.shape[0]
    return Meshes(verts=vertices, faces=faces[None].expand(b, -1, -1).to(vertices.device), textures=textures)


def _bin_size(device: torch.device) -> int | None:
    # The coarse-to-fine rasteriser pays off on GPUs; on CPU the naive one was measured as fast (bin_size 0 and
    # None alike for a 1280- and a 5120-face body at 32x16 and 64x32).
    return 0 if device.type == "cpu" else None


# SoftRas' cut-off: faces whose soft coverage of a pixel is below this probability are left out.
_CUTOFF = 1e-4
SHARP_BLUR_PX = 0.05  # an edge too narrow to spill into neighbouring pixels: the silhouette as it is


def blur_sigma(blur_px: float, image_size: tuple[int, int]) -> float:
    """The soft silhouette's sigma for an edge `blur_px` pixels wide at `image_size` (H, W).

    pytorch3d's soft silhouette is sigmoid(-d² / sigma) of the squared distance d² in NDC, and its pixels are
    2 / min(H, W) NDC units wide in both directions; a face `blur_px` pixels away then covers a pixel with
    probability `_CUTOFF`."""
    ndc = blur_px * 2.0 / min(image_size)
    return ndc**2 / math.log(1.0 / _CUTOFF - 1.0)


def ndc_pixel_centres(image_size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Pixel centres of an (H, W) render in pytorch3d's NDC: +x left, +y up, the shorter side spanning [-1, 1].
    → (H, W, 2) (x, y)."""
    h, w = image_size

    def axis(n: int, other: int) -> torch.Tensor:
        half = max(n / other, 1.0)
        return half - (2 * torch.arange(n, dtype=torch.float32, device=device) + 1) * half / n

    return torch.stack(torch.meshgrid(axis(w, h), axis(h, w), indexing="xy"), dim=-1)


def _segment_d2(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
    return ((p - a - t[..., None] * ab) ** 2).sum(-1)


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def signed_face_dists(verts_ndc: torch.Tensor, faces: torch.Tensor, pix_to_face: torch.Tensor) -> torch.Tensor:
    """The rasteriser's `dists`, differentiable: for every (pixel, face) of `pix_to_face` (B, H, W, K; packed face
    indices, -1 for none), the squared xy distance in NDC from the pixel centre to the face's nearest edge,
    negative inside the face; -1 where there is no face. verts_ndc (B, V, 3) projected vertices, faces (F, 3)."""
    b, v = verts_ndc.shape[:2]
    packed = (faces[None].to(verts_ndc.device) + v * torch.arange(b, device=verts_ndc.device)[:, None, None])
    dists = torch.full(pix_to_face.shape, -1.0, dtype=verts_ndc.dtype, device=verts_ndc.device)
    where = torch.nonzero(pix_to_face >= 0, as_tuple=True)
    tri = verts_ndc.reshape(-1, 3)[packed.reshape(-1, 3)[pix_to_face[where]]][..., :2]  # (N, 3, 2)
    p = ndc_pixel_centres(tuple(pix_to_face.shape[1:3]), verts_ndc.device)[where[1], where[2]]  # (N, 2)
    a, b_, c = tri.unbind(dim=1)
    d2 = torch.minimum(torch.minimum(_segment_d2(p, a, b_), _segment_d2(p, b_, c)), _segment_d2(p, c, a))
    s0, s1, s2 = _cross(b_ - a, p - a), _cross(c - b_, p - b_), _cross(a - c, p - c)
    inside = ((s0 >= 0) & (s1 >= 0) & (s2 >= 0)) | ((s0 <= 0) & (s1 <= 0) & (s2 <= 0))
    return dists.index_put(where, torch.where(inside, -d2, d2))


def outline_alpha(dists: torch.Tensor, pix_to_face: torch.Tensor, sigma: float) -> torch.Tensor:
    """Soft silhouette (B, H, W) from signed face distances `dists` (B, H, W, K) and `pix_to_face` (-1: none).

    Each face covers a pixel with probability sigmoid(-d / sigma) (SoftRas, as pytorch3d's SoftSilhouetteShader).
    A pixel inside some face blends them as that shader does, 1 - Π(1 - p), so the edges between adjacent faces
    leave no dips; a pixel outside every face takes its nearest face alone, i.e. its distance to the outline.
    The shader's product everywhere counts every face near the outline — front and back surface, neighbouring
    faces — so its silhouette, thresholded at 0.5, is larger than the body (1.27x the area of the true mask at
    64x32 with a 1-pixel edge, the stand-in body) and a silhouette loss is smallest for a body about 3 % too small
    with thinner limbs, against the keypoints; here it is smallest at the true size (tests/test_body_camera_render)."""
    valid = pix_to_face >= 0
    p = torch.where(valid, torch.sigmoid(-dists / sigma), torch.zeros_like(dists))
    inside = (valid & (dists < 0)).any(dim=-1)
    return torch.where(inside, 1.0 - (1.0 - p).prod(dim=-1), p.amax(dim=-1))


class SilhouetteRenderer:
    """Soft silhouettes of meshes seen by the camera of camera.py."""

    def __init__(self, cfg: BodyConfig) -> None:
        self.focal = normalized_focal(cfg.focal_length, cfg.focal_res)
        self.blur_px = cfg.sil_blur_px
        self.faces_per_pixel = cfg.faces_per_pixel

    def render(self, vertices: torch.Tensor, faces: torch.Tensor, cam_t: torch.Tensor,
               image_size: tuple[int, int], blur_px: float | None = None) -> torch.Tensor:
        """Vertices (B, V, 3) in body coordinates, faces (F, 3) long, cam_t (B, 3) → silhouettes (B, H, W) in [0, 1].

        `blur_px` overrides the configured edge width, e.g. `SHARP_BLUR_PX` to measure the silhouette itself: a soft
        edge covers pixels next to it (that is what gives them gradients), so a soft silhouette thresholded at 0.5
        reaches about half a pixel beyond the body."""
        from pytorch3d.renderer import MeshRasterizer, RasterizationSettings

        sigma = blur_sigma(self.blur_px if blur_px is None else blur_px, image_size)
        with torch.autocast(device_type=vertices.device.type, enabled=False):
            verts, t = vertices.float(), cam_t.float()
            settings = RasterizationSettings(
                image_size=tuple(image_size),
                # pytorch3d compares blur_radius with squared NDC distances, as the shader's sigma.
                blur_radius=math.log(1.0 / _CUTOFF - 1.0) * sigma,
                faces_per_pixel=self.faces_per_pixel,
                bin_size=_bin_size(verts.device),
                perspective_correct=False,
            )
            cameras = pytorch3d_cameras(t, image_size, self.focal)
            meshes = _meshes(verts, faces)
            rasterizer = MeshRasterizer(cameras=cameras, raster_settings=settings)
            with torch.no_grad():
                fragments = rasterizer(meshes)
            dists = signed_face_dists(rasterizer.transform(meshes).verts_padded(), faces, fragments.pix_to_face)
            return outline_alpha(dists, fragments.pix_to_face, sigma)


class TexturedImages(NamedTuple):
    """rgb (B, H, W, 3) in [0, 1]; mask (B, H, W) bool; keypoints (B, K, 3) = (x, y, 1 inside the crop else 0)."""

    rgb: torch.Tensor
    mask: torch.Tensor
    keypoints: torch.Tensor | None


def _rgb(value: float | tuple[float, float, float] | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    return t.reshape(-1, 3).expand(batch, 3) if t.numel() in (3, 3 * batch) else t.reshape(1, 1).expand(batch, 3)


class TexturedRenderer:
    """Shaded pictures of per-vertex coloured meshes (no gradients), on the camera of camera.py."""

    def __init__(self, cfg: BodyConfig) -> None:
        self.focal = normalized_focal(cfg.focal_length, cfg.focal_res)

    @torch.no_grad()
    def render(
        self,
        vertices: torch.Tensor,
        faces: torch.Tensor,
        colors: torch.Tensor,
        cam_t: torch.Tensor,
        image_size: tuple[int, int],
        keypoints: torch.Tensor | None = None,
        light_location: torch.Tensor | tuple[float, float, float] = (0.0, 0.0, 0.0),
        ambient: float | torch.Tensor = 0.45,
        diffuse: float | torch.Tensor = 0.6,
        specular: float | torch.Tensor = 0.05,
        shininess: float = 20.0,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> TexturedImages:
        """Render meshes (B, V, 3) with faces (F, 3) and per-vertex colours (B, V, 3) in [0, 1].

        cam_t (B, 3) places each body in the camera; `keypoints` (B, K, 3) body points to project.
        light_location: (3,) or (B, 3) in camera coordinates (x right, y down, z forward, metres);
        ambient / diffuse / specular: light colours, a float, (3,) or (B, 3).
        """
        from pytorch3d.renderer import (
            BlendParams,
            HardPhongShader,
            Materials,
            MeshRasterizer,
            MeshRendererWithFragments,
            PointLights,
            RasterizationSettings,
            TexturesVertex,
        )

        with torch.autocast(device_type=vertices.device.type, enabled=False):
            b, dev = vertices.shape[0], vertices.device
            verts, t = vertices.float(), cam_t.float()
            cameras = pytorch3d_cameras(t, image_size, self.focal)
            # Lights are placed in world (= body) coordinates: camera point p is p - cam_t there.
            light_cam = torch.as_tensor(light_location, dtype=torch.float32, device=dev).reshape(-1, 3).expand(b, 3)
            lights = PointLights(
                location=light_cam - t,
                ambient_color=_rgb(ambient, b, dev),
                diffuse_color=_rgb(diffuse, b, dev),
                specular_color=_rgb(specular, b, dev),
                device=dev,
            )
            settings = RasterizationSettings(image_size=tuple(image_size), blur_radius=0.0, faces_per_pixel=1,
                                             bin_size=_bin_size(dev))
            renderer = MeshRendererWithFragments(
                rasterizer=MeshRasterizer(cameras=cameras, raster_settings=settings),
                shader=HardPhongShader(device=dev, cameras=cameras, lights=lights,
                                       materials=Materials(shininess=shininess, device=dev),
                                       blend_params=BlendParams(background_color=background)),
            )
            meshes = _meshes(verts, faces, TexturesVertex(verts_features=colors.float()))
            images, fragments = renderer(meshes)
            kp = None
            if keypoints is not None:
                h, w = image_size
                xy = project_points(keypoints.float(), t, image_size, self.focal)
                inside = (xy[..., 0] >= 0) & (xy[..., 0] < w) & (xy[..., 1] >= 0) & (xy[..., 1] < h)
                kp = torch.cat([xy, inside[..., None].float()], dim=-1)
        return TexturedImages(images[..., :3].clamp(0, 1), fragments.pix_to_face[..., 0] >= 0, kp)
