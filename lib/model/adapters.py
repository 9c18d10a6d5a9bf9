"""Spatial adapters for parameter-efficient fine-tuning (3DSAM-adapter idea).

Each encoder block gets a small residual adapter: down-projection, 3D depthwise convolution over the token grid,
activation, up-projection. The up-projection starts at zero, so an adapted model starts identical to its base.
Adapters live in ``image_encoder.adapters`` and are applied by forward hooks, so the base state-dict keys are
unchanged and official checkpoints still load strictly into an adapted model.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lib.model.sam3d import Sam3D


class SpatialAdapter(nn.Module):
    """``x + up(act(dwconv3d(down(x))))`` on channels-last tokens (B, D, H, W, C)."""

    def __init__(self, dim: int, bottleneck: int = 32) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.conv = nn.Conv3d(bottleneck, bottleneck, kernel_size=3, padding=1, groups=bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x).permute(0, 4, 1, 2, 3)
        h = self.act(self.conv(h)).permute(0, 2, 3, 4, 1)
        return x + self.up(h)


def add_adapters(model: Sam3D, bottleneck: int = 32) -> Sam3D:
    """Attach one :class:`SpatialAdapter` after every encoder block (in place; returns ``model``)."""
    encoder = model.image_encoder
    if hasattr(encoder, "adapters"):
        raise ValueError("the model already has adapters")
    dim = encoder.pos_embed.shape[-1]
    device = encoder.pos_embed.device
    encoder.adapters = nn.ModuleList(SpatialAdapter(dim, bottleneck) for _ in encoder.blocks).to(device)
    for block, adapter in zip(encoder.blocks, encoder.adapters, strict=True):
        block.register_forward_hook(lambda _module, _inputs, output, adapter=adapter: adapter(output))
    return model


def set_trainable(model: Sam3D, norms: bool = True, prompt_encoder: bool = True, mask_decoder: bool = True) -> int:
    """Freeze the base encoder; train adapters and, optionally, encoder norms, prompt encoder and mask decoder.

    Returns the number of trainable parameters.
    """
    for name, parameter in model.named_parameters():
        trainable = ".adapters." in name
        trainable |= norms and name.startswith("image_encoder.") and ("norm" in name or "neck.1." in name
                                                                       or "neck.3." in name)
        trainable |= prompt_encoder and name.startswith("prompt_encoder.")
        trainable |= mask_decoder and name.startswith("mask_decoder.")
        parameter.requires_grad_(trainable)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_state(model: Sam3D) -> dict[str, torch.Tensor]:
    """Only the tensors that fine-tuning changes: what an adapter file stores."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}
