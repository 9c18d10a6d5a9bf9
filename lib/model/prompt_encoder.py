"""3D prompt encoder (SAM-Med3D ``PromptEncoder3D``): points with labels and low-resolution mask logits."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from lib.model.common import LayerNorm3d


class PositionEmbeddingRandom3D(nn.Module):
    """Random Fourier features of 3D coordinates (``[sin, cos, sin]``, as the reference builds them)."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((3, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords), torch.sin(coords)], dim=-1)

    def forward(self, size: tuple[int, int, int]) -> torch.Tensor:
        """Encoding of every grid cell, (C, X, Y, Z).

        The reference stacks the cumulative coordinates as (axis 1, axis 0, axis 2), so a point (p0, p1, p2)
        matches grid cell (p1, p0, p2); the official weights were trained with this convention.
        """
        x, y, z = size
        grid = torch.ones((x, y, z), device=self.positional_encoding_gaussian_matrix.device)
        y_embed = (grid.cumsum(dim=0) - 0.5) / y
        x_embed = (grid.cumsum(dim=1) - 0.5) / x
        z_embed = (grid.cumsum(dim=2) - 0.5) / z
        return self._pe_encoding(torch.stack([x_embed, y_embed, z_embed], dim=-1)).permute(3, 0, 1, 2)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int, int]) -> torch.Tensor:
        scale = torch.as_tensor(image_size, dtype=torch.float32, device=coords.device)
        return self._pe_encoding(coords.float() / scale)


class PromptEncoder3D(nn.Module):
    """Embeds clicks (sparse) and a previous low-res mask (dense) for the mask decoder.

    Box prompts would need two corner embeddings that SAM-Med3D's prompt encoder does not have (the reference's
    box path indexes ``point_embeddings[2]`` and ``[3]``, which do not exist), so boxes are refused here; a request's
    box becomes clicks and a mask prior (:mod:`lib.prompts.box`).
    """

    def __init__(self, embed_dim: int, image_embedding_size: tuple[int, int, int],
                 input_image_size: tuple[int, int, int], mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom3D(embed_dim // 3)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(2))  # background, foreground
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv3d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv3d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans),
            nn.GELU(),
            nn.Conv3d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Voxel-centre encodings plus the label embedding; SAM appends one padding point (label -1)."""
        points = torch.cat([points + 0.5, points.new_zeros((points.shape[0], 1, 3))], dim=1)
        labels = torch.cat([labels, -labels.new_ones((labels.shape[0], 1))], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        embedding = torch.where((labels == -1)[..., None], self.not_a_point_embed.weight, embedding)
        embedding = embedding + (labels == 0)[..., None] * self.point_embeddings[0].weight
        return embedding + (labels == 1)[..., None] * self.point_embeddings[1].weight

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (B, N + 1, C) point embeddings and dense (B, C, X, Y, Z) mask embeddings."""
        if boxes is not None:
            raise ValueError("box prompts are not supported: the SAM-Med3D prompt encoder has no box corner "
                             "embeddings; give clicks instead")
        batch = points[0].shape[0] if points is not None else masks.shape[0] if masks is not None else 1
        if points is not None:
            sparse = self._embed_points(points[0], points[1])
        else:
            sparse = torch.empty((batch, 0, self.embed_dim), device=self.no_mask_embed.weight.device)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return sparse, dense
