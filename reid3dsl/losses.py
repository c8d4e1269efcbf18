"""Loss functions of 3DSL, as plain functions: identity (label-smoothed CE is torch's `cross_entropy` with
`label_smoothing`; the clothes-aware batch-hard triplet here), the self-supervised projection losses
(keypoints, silhouette, displacement) and the LSGAN losses of the SMPL-prior discriminator."""

from __future__ import annotations

import torch


def triplet_loss(
    feat: torch.Tensor, pids: torch.Tensor, margin: float, clothes: torch.Tensor | None = None
) -> torch.Tensor:
    """Batch-hard triplet loss (euclidean), clothes-aware when `clothes` is given.

    feat (B,D), pids (B,), clothes (B,) long with -1 for unknown. For each anchor the positive is the farthest
    sample of its identity — restricted, when clothes labels exist and the identity appears in other clothes in
    the batch, to those in OTHER clothes (so texture cannot explain the match) — and the negative is the closest
    sample of another identity (the most similar-looking one, typically in similar clothes). Without clothes
    labels this is the usual random-P×K batch-hard mining. Anchors without a positive or negative are left out.
    """
    dist = torch.cdist(feat, feat)
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=feat.device)
    positive = same & ~eye
    if clothes is not None:
        known = (clothes[:, None] >= 0) & (clothes[None, :] >= 0)
        other = positive & known & (clothes[:, None] != clothes[None, :])
        positive = torch.where(other.any(dim=1, keepdim=True), other, positive)
    negative = ~same
    valid = positive.any(dim=1) & negative.any(dim=1)
    if not bool(valid.any()):
        return feat.sum() * 0.0
    hardest_pos = dist.masked_fill(~positive, float("-inf")).amax(dim=1)
    hardest_neg = dist.masked_fill(~negative, float("inf")).amin(dim=1)
    return torch.relu(hardest_pos - hardest_neg + margin)[valid].mean()


def lsgan_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """E[(1 - D(real))²] + E[D(fake)²], means over the batch and all heads; scores (B, heads)."""
    return (1.0 - real_scores).pow(2).mean() + fake_scores.pow(2).mean()


def lsgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """E[(1 - D(fake))²]: the encoders' adversarial loss; scores (B, heads)."""
    return (1.0 - fake_scores).pow(2).mean()


def keypoint_loss(pred: torch.Tensor, target: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Confidence-weighted squared keypoint error: pred (B, K, 2) pixels, target (B, K, 3) = (x, y, confidence)
    pixels of an (H, W) image. Differences are measured in units of half the image height (the camera's
    normalised coordinates), so the loss does not depend on the resolution; mean over B and K."""
    half_h = image_size[0] / 2.0
    err = ((pred - target[..., :2]) / half_h).pow(2).sum(-1)
    return (target[..., 2] * err).mean()


def silhouette_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of a rendered soft silhouette and a mask, both (B, H, W) in [0, 1]."""
    return (pred - target).pow(2).mean()


def displacement_loss(delta: torch.Tensor) -> torch.Tensor:
    """‖δ‖²: squared displacement length per vertex, mean over B and V (independent of the mesh size); (B, V, 3)."""
    return delta.pow(2).sum(-1).mean()
