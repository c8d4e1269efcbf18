"""The SMPL-prior discriminator D(theta, beta) of the adversarial projection (HMR's design).

Three kinds of heads, each giving one raw LSGAN score: per joint (every rotation matrix is embedded by
one small MLP shared by all joints, then each joint has its own linear read-out), the whole pose (an MLP
over all joint embeddings together) and the shape (an MLP over beta).
"""

from __future__ import annotations

import torch
from torch import nn


class SMPLDiscriminator(nn.Module):
    """forward(rotmats (B, J, 3, 3), betas (B, NB)) → scores (B, J + 2): J per-joint, full pose, shape."""

    def __init__(self, num_joints: int = 24, num_betas: int = 10, embed_dim: int = 32, pose_hidden: int = 1024) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.joint_embed = nn.Sequential(nn.Linear(9, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim), nn.ReLU())
        self.joint_weight = nn.Parameter(torch.randn(num_joints, embed_dim) / embed_dim**0.5)
        self.joint_bias = nn.Parameter(torch.zeros(num_joints))
        self.pose_head = nn.Sequential(
            nn.Linear(num_joints * embed_dim, pose_hidden), nn.ReLU(),
            nn.Linear(pose_hidden, pose_hidden), nn.ReLU(),
            nn.Linear(pose_hidden, 1),
        )
        self.shape_head = nn.Sequential(
            nn.Linear(num_betas, 10), nn.ReLU(), nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 1)
        )

    def forward(self, rotmats: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        b = rotmats.shape[0]
        emb = self.joint_embed(rotmats.reshape(b, self.num_joints, 9))  # (B, J, E), weights shared by joints
        per_joint = (emb * self.joint_weight).sum(-1) + self.joint_bias  # (B, J)
        pose = self.pose_head(emb.reshape(b, -1))  # (B, 1)
        shape = self.shape_head(betas)  # (B, 1)
        return torch.cat([per_joint, pose, shape], dim=1)
