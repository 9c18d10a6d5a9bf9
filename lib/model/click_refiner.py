"""Click-conditioned mask refinement at half the crop size, in the spirit of DeepGrow's and nnInteractive's prompt
channels: a U-Net sees the crop image, the decoder's upsampled logits, positive and negative click maps and the
previous refined mask, so that the mask grows from where the annotator clicked whatever the decoder's tokens made
of the clicks. The ``prompts`` kind also takes nnInteractive's dense prompt channels: a filled box and painted
foreground and background voxels (strokes, a lasso's area and ring), on the refiner's grid."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import UNet

from lib.model.mask_refiner import REFINE_STRIDE

CLICK_SIGMA = 1.5  # click map: a Gaussian of this width (refiner voxels) around each click
INPUTS = ("image", "decoder logits", "foreground clicks", "background clicks", "previous mask")
PROMPT_INPUTS = ("box", "foreground strokes", "background strokes")  # lib.prompts.channels makes them


def click_maps(points: torch.Tensor, labels: torch.Tensor, size: int) -> torch.Tensor:
    """(B, N, 3) clicks in crop voxels (of a crop ``REFINE_STRIDE * size`` wide) and (B, N) labels (1 foreground,
    0 background, -1 padding) -> (B, 2, size, size, size): per voxel the strongest click Gaussian of each sign."""
    position = (points.float() + 0.5) / REFINE_STRIDE - 0.5  # on the refiner's grid
    axis = torch.arange(size, dtype=torch.float32, device=points.device)
    out = torch.zeros((points.shape[0], 2, size, size, size), dtype=torch.float32, device=points.device)
    for b in range(points.shape[0]):
        for channel, label in ((0, 1), (1, 0)):
            for p in position[b][labels[b] == label]:
                weights = [torch.exp(-((axis - p[i]) ** 2) / (2 * CLICK_SIGMA**2)) for i in range(3)]
                gaussian = weights[0][:, None, None] * weights[1][None, :, None] * weights[2][None, None, :]
                out[b, channel] = torch.maximum(out[b, channel], gaussian)
    return out


class ClickRefiner3D(nn.Module):
    """``refined = U-Net([image, tanh(upsampled logits / 8), clicks, tanh(previous / 4)(, prompts)])`` at half the
    crop size."""

    def __init__(self, prompt_channels: bool = False) -> None:
        super().__init__()
        self.prompt_channels = prompt_channels
        inputs = len(INPUTS) + (len(PROMPT_INPUTS) if prompt_channels else 0)
        self.unet = UNet(spatial_dims=3, in_channels=inputs, out_channels=1, channels=(16, 32, 64, 128, 256),
                         strides=(2, 2, 2, 2), num_res_units=1)

    def forward(self, low_res_logits: torch.Tensor, guide: torch.Tensor, clicks: torch.Tensor,
                previous: torch.Tensor | None = None, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, r, r, r) decoder logits, ``MaskRefiner3D.guide`` of the crop, its :func:`click_maps`, the
        previous logits at any resolution (refined ones, or an uploaded mask's low-res ones; None for a new object)
        and, for the ``prompts`` kind, the (B, 3, S/2, S/2, S/2) :data:`PROMPT_INPUTS` (None: no such prompt)
        -> (B, 1, S/2, S/2, S/2) refined logits."""
        size = guide.shape[-3:]
        upsampled = F.interpolate(low_res_logits, size=size, mode="trilinear", align_corners=False)
        if previous is None:
            prior = torch.zeros_like(upsampled)
        else:
            if previous.shape[-3:] != size:
                previous = F.interpolate(previous, size=size, mode="trilinear", align_corners=False)
            prior = torch.tanh(previous / 4.0)
        # logits can be large: bounded copies keep the convolutions in their trained range
        inputs = [guide, torch.tanh(upsampled / 8.0), clicks, prior]
        if self.prompt_channels:
            inputs.append(guide.new_zeros((guide.shape[0], len(PROMPT_INPUTS), *size)) if prompts is None else prompts)
        return self.unet(torch.cat(inputs, dim=1))


def widened_inputs(state: dict[str, torch.Tensor], prefix: str = "mask_refiner.") -> dict[str, torch.Tensor]:
    """A ``clicks`` refiner's weights for the ``prompts`` kind: the first layer's kernels get zero weights for the
    :data:`PROMPT_INPUTS`, so the widened refiner answers exactly as before until it is trained on them (weights
    without a click refiner come back unchanged)."""
    out = dict(state)
    for key in (f"{prefix}unet.model.0.conv.unit0.conv.weight", f"{prefix}unet.model.0.residual.weight"):
        weight = state.get(key)
        if weight is not None and weight.shape[1] == len(INPUTS):
            extra = torch.zeros((weight.shape[0], len(PROMPT_INPUTS), *weight.shape[2:]), dtype=weight.dtype)
            out[key] = torch.cat([weight, extra], dim=1)
    return out


def refiner_kind(state: dict[str, torch.Tensor], prefix: str = "mask_refiner.") -> str | None:
    """``prompts`` or ``clicks`` for a U-Net refiner's weights (its first layer's input count tells them apart),
    None for any other."""
    weight = state.get(f"{prefix}unet.model.0.conv.unit0.conv.weight")
    if weight is None:
        return None
    return "prompts" if weight.shape[1] == len(INPUTS) + len(PROMPT_INPUTS) else "clicks"
