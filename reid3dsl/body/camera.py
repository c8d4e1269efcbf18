"""The camera: weak-perspective psi = (s, tx, ty) → a perspective camera, point projection, pytorch3d cameras.

Conventions (one set for keypoints and renderers, so projected keypoints and rendered silhouettes
line up):
- Camera coordinates are OpenCV's: x right, y down, z forward; a body point X goes to X + cam_t.
- Normalised image coordinates: the crop's height spans [-1, 1] (y down) and x uses the same unit,
  so a 2:1 crop spans [-0.5, 0.5] in x. With normalised focal length f_n = 2 * focal_length / focal_res
  (the focal length in pixels of a crop `focal_res` pixels high), a point projects to
  x_n = f_n * X / Z, y_n = f_n * Y / Z.
- Weak perspective psi = (s, tx, ty) means x_n ≈ s * (X + tx), y_n ≈ s * (Y + ty); it becomes the
  translation cam_t = (tx, ty, f_n / s), i.e. tz = 2 f / (res * s).
- Pixels of an (H, W) crop: u = W/2 + (H/2) x_n, v = H/2 + (H/2) y_n, with pixel (i, j) covering
  [j, j+1) x [i, i+1) (centres at +0.5). The focal length and principal point scale with H, so the
  same psi gives consistent keypoints at (H, W) and silhouettes at any size of the same aspect ratio.
"""

from __future__ import annotations

import torch

MIN_SCALE = 1e-3  # weak-perspective scales below this are clamped (the camera would be at infinity)


def normalized_focal(focal_length: float, focal_res: float) -> float:
    """f_n = 2 f / res: the focal length in units of half the crop height."""
    return 2.0 * focal_length / focal_res


def weak_perspective_to_translation(psi: torch.Tensor, focal: float) -> torch.Tensor:
    """psi (B, 3) = (s, tx, ty) → camera translation cam_t (B, 3) = (tx, ty, focal / s); `focal` is f_n."""
    s = psi[:, 0].clamp_min(MIN_SCALE)
    return torch.stack([psi[:, 1], psi[:, 2], focal / s], dim=-1)


def project_points(points: torch.Tensor, cam_t: torch.Tensor, image_size: tuple[int, int],
                   focal: float) -> torch.Tensor:
    """Perspective projection of body points (B, N, 3) with translation cam_t (B, 3) → pixels (B, N, 2) of an
    (H, W) crop (x, y; see the module docstring for the convention); `focal` is the normalised f_n."""
    h, w = image_size
    p = points + cam_t[:, None, :]
    z = p[..., 2:3].clamp_min(1e-6)
    xy_n = focal * p[..., :2] / z
    centre = torch.tensor([w / 2.0, h / 2.0], dtype=xy_n.dtype, device=xy_n.device)
    return centre + (h / 2.0) * xy_n


def intrinsics(batch: int, image_size: tuple[int, int], focal: float, device: torch.device,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """OpenCV camera matrices K (B, 3, 3) of an (H, W) crop for normalised focal length `focal`."""
    h, w = image_size
    k = torch.zeros(batch, 3, 3, device=device, dtype=dtype)
    k[:, 0, 0] = k[:, 1, 1] = focal * h / 2.0
    k[:, 0, 2] = w / 2.0
    k[:, 1, 2] = h / 2.0
    k[:, 2, 2] = 1.0
    return k


def pytorch3d_cameras(cam_t: torch.Tensor, image_size: tuple[int, int], focal: float):
    """The pytorch3d PerspectiveCameras (batch B) equal to `project_points` with translation cam_t (B, 3)."""
    from pytorch3d.utils import cameras_from_opencv_projection

    b = cam_t.shape[0]
    rot = torch.eye(3, device=cam_t.device, dtype=cam_t.dtype).expand(b, 3, 3)
    size = torch.tensor([image_size], device=cam_t.device, dtype=cam_t.dtype).expand(b, 2)
    return cameras_from_opencv_projection(rot, cam_t, intrinsics(b, image_size, focal, cam_t.device, cam_t.dtype), size)
