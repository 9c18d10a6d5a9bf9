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

    Box prompts need two corner embeddings that the official checkpoints do not have
    (``num_point_embeddings == 2``); boxes are refused with a clear error for such weights.
    """

    def __init__(self, embed_dim: int, image_embedding_size: tuple[int, int, int],
                 input_image_size: tuple[int, int, int], mask_in_chans: int = 16,
                 num_point_embeddings: int = 2) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom3D(embed_dim // 3)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(num_point_embeddings))
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

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5
        if pad:
            points = torch.cat([points, points.new_zeros((points.shape[0], 1, 3))], dim=1)
            labels = torch.cat([labels, -labels.new_ones((labels.shape[0], 1))], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        embedding = torch.where((labels == -1)[..., None], self.not_a_point_embed.weight, embedding)
        embedding = embedding + (labels == 0)[..., None] * self.point_embeddings[0].weight
        return embedding + (labels == 1)[..., None] * self.point_embeddings[1].weight

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        if len(self.point_embeddings) < 4:
            raise ValueError("box prompts are not supported by these weights (no box corner embeddings)")
        corners = self.pe_layer.forward_with_coords((boxes + 0.5).reshape(-1, 2, 3), self.input_image_size)
        return torch.stack([corners[:, 0] + self.point_embeddings[2].weight[0],
                            corners[:, 1] + self.point_embeddings[3].weight[0]], dim=1)

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        batch = next((t.shape[0] for t in (points[0] if points else None, boxes, masks) if t is not None), 1)
        device = self.no_mask_embed.weight.device
        sparse = torch.empty((batch, 0, self.embed_dim), device=device)
        if points is not None:
            sparse = torch.cat([sparse, self._embed_points(points[0], points[1], pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return sparse, dense
