"""3D mask decoder (SAM-Med3D ``MaskDecoder3D``): masks at 1/4 of the input size plus predicted IoU."""

from __future__ import annotations

import torch
import torch.nn as nn

from lib.model.common import MLP, LayerNorm3d
from lib.model.fast_conv import PatchConvTranspose3d, blocks_to_grid, fast_inference
from lib.model.transformer import TwoWayTransformer3D


class MaskDecoder3D(nn.Module):
    def __init__(self, transformer_dim: int, transformer_mlp_dim: int = 2048, num_heads: int = 8,
                 num_multimask_outputs: int = 3, iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer = TwoWayTransformer3D(2, transformer_dim, num_heads, transformer_mlp_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose3d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm3d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose3d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                             dense_prompt_embeddings)
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, selected], iou_pred[:, selected]

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse_prompt_embeddings: torch.Tensor,
                      dense_prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((tokens, sparse_prompt_embeddings), dim=1)
        src = image_embeddings
        if src.shape[0] != tokens.shape[0]:
            src = torch.repeat_interleave(src, tokens.shape[0], dim=0)
        src = src + dense_prompt_embeddings
        pos_src = image_pe
        if pos_src.shape[0] != tokens.shape[0]:
            pos_src = torch.repeat_interleave(pos_src, tokens.shape[0], dim=0)
        b, c, x, y, z = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        masks = self.upscaled_masks(src.transpose(1, 2).reshape(b, c, x, y, z), hyper_in)
        return masks, self.iou_prediction_head(iou_token_out)

    def upscaled_masks(self, src: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """(B, M, 4X, 4Y, 4Z) masks: ``hyper_in`` (B, M, C/8) times the upscaled embedding ``src`` (B, C, X, Y, Z).

        At inference the last upscaling layer's output stays in blocks, one per input voxel (the final GELU is
        elementwise), and only the M masks are put in grid order: the (C/8)-channel full-resolution tensor is never
        rearranged."""
        last, activation = self.output_upscaling[-2:]
        if isinstance(last, PatchConvTranspose3d) and fast_inference(src):
            hidden = self.output_upscaling[:-2](src)
            blocks = activation(last.blocks(hidden))  # (B, voxels, offsets, C/8)
            b = blocks.shape[0]
            masks = blocks.view(b, -1, blocks.shape[-1]) @ hyper_in.transpose(1, 2)
            return blocks_to_grid(masks.view(b, -1, blocks.shape[2], masks.shape[-1]), hidden.shape[2:], last.stride)
        upscaled = self.output_upscaling(src)
        b, c, x, y, z = upscaled.shape
        return (hyper_in @ upscaled.view(b, c, x * y * z)).view(b, -1, x, y, z)
