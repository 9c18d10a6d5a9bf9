"""Faster CPU kernels for the 3D convolutions of batch-one inference, same parameters and results.

- PyTorch's CPU dispatcher sends a float32 convolution to oneDNN only when its batch, groups, kernel or first input
  plane is large enough; a batch of one with few channels (the click refiner's U-Net at 64^3, five input channels)
  goes to its reference kernel, ``slow_conv3d``. Measured here (AMD EPYC, 2 threads): the click refiner's U-Net
  takes 82-95 ms that way and 33 ms on oneDNN, outputs equal to 1e-5.
- A transposed convolution whose kernel equals its stride (the SAM decoder's output upscaling) is one matrix
  product, bias included, and a reshuffle: 7 against 15 ms for SAM-Med3D's two upscaling layers. The decoder takes
  its mask product on the last layer's blocks before any reshuffle (:meth:`MaskDecoder3D.upscaled_masks`).

Only inference takes these paths: with gradients on, ``mkldnn_convolution`` gave other gradients than the reference
kernel, so training keeps PyTorch's own kernels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


def fast_inference(input: torch.Tensor) -> bool:
    """Whether ``input`` takes the faster kernels: float32 on the CPU, no gradient recorded."""
    return input.device.type == "cpu" and input.dtype == torch.float32 and not torch.is_grad_enabled()


class OneDnnConv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs on oneDNN whenever no gradient is recorded."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if fast_inference(input) and self.padding_mode == "zeros" and not isinstance(self.padding, str):
            return torch.ops.aten.mkldnn_convolution(input, weight, bias, self.padding, self.stride, self.dilation,
                                                     self.groups)
        return super()._conv_forward(input, weight, bias)


class PatchConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` whose kernel equals its stride (no padding, dilation or groups): at inference every
    input voxel's channels times the weight give its output block."""

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if not fast_inference(input) or output_size is not None or input.dim() != 5:
            return super().forward(input, output_size)
        return blocks_to_grid(self.blocks(input), input.shape[2:], self.stride)

    def blocks(self, input: torch.Tensor) -> torch.Tensor:
        """(B, input voxels, kernel offsets, output channels): each input voxel's output block, bias included, as one
        matrix product (for inference: ``input`` (B, C, X, Y, Z) float32 on the CPU)."""
        batch, channels = input.shape[:2]
        out_channels = self.weight.shape[1]
        weight = self.weight.permute(0, 2, 3, 4, 1).reshape(channels, -1)  # columns: offsets, then channels
        offsets = weight.shape[1] // out_channels
        rows = input.reshape(batch, channels, -1).transpose(1, 2).reshape(-1, channels)
        blocks = rows @ weight if self.bias is None else torch.addmm(self.bias.repeat(offsets), rows, weight)
        return blocks.view(batch, -1, offsets, out_channels)


def blocks_to_grid(blocks: torch.Tensor, grid: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """(B, X*Y*Z, kernel offsets, C) output blocks of a kernel-equals-stride transposed convolution on an (X, Y, Z)
    grid -> (B, C, X*sx, Y*sy, Z*sz)."""
    batch, channels = blocks.shape[0], blocks.shape[-1]
    out = blocks.view(batch, *grid, *stride, channels).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return out.reshape(batch, channels, *(n * s for n, s in zip(grid, stride, strict=True)))


def _kernel_is_stride(module: nn.ConvTranspose3d) -> bool:
    return (tuple(module.kernel_size) == tuple(module.stride) and not any(module.padding)
            and not any(module.output_padding) and module.groups == 1 and set(module.dilation) == {1})


def use_fast_convolutions(module: nn.Module) -> nn.Module:
    """Turns, in place, every plain ``nn.Conv3d`` of ``module`` into :class:`OneDnnConv3d` (where PyTorch has
    oneDNN) and every kernel-equals-stride ``nn.ConvTranspose3d`` into :class:`PatchConvTranspose3d`; returns
    ``module``."""
    for child in module.modules():
        if type(child) is nn.Conv3d and torch.backends.mkldnn.is_available():
            child.__class__ = OneDnnConv3d
        elif type(child) is nn.ConvTranspose3d and _kernel_is_stride(child):
            child.__class__ = PatchConvTranspose3d
    return module
