"""Click-conditioned mask refinement at half the crop size, in the spirit of DeepGrow's and nnInteractive's prompt
channels: a U-Net sees the crop image, the decoder's upsampled logits, positive and negative click maps and the
previous refined mask, so that the mask grows from where the annotator clicked whatever the decoder's tokens made
of the clicks."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import UNet

from lib.model.mask_refiner import REFINE_STRIDE

CLICK_SIGMA = 1.5  # click map: a Gaussian of this width (refiner voxels) around each click
INPUTS = ("image", "decoder logits", "foreground clicks", "background clicks", "previous mask")


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
    """``refined = U-Net([image, tanh(upsampled logits / 8), clicks, tanh(previous / 4)])`` at half the crop size."""

    def __init__(self) -> None:
        super().__init__()
        self.unet = UNet(spatial_dims=3, in_channels=len(INPUTS), out_channels=1, channels=(16, 32, 64, 128, 256),
                         strides=(2, 2, 2, 2), num_res_units=1)

    def forward(self, low_res_logits: torch.Tensor, guide: torch.Tensor, clicks: torch.Tensor,
                previous: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, r, r, r) decoder logits, ``MaskRefiner3D.guide`` of the crop, its :func:`click_maps` and the
        previous logits at any resolution (refined ones, or an uploaded mask's low-res ones; None for a new object)
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
        return self.unet(torch.cat([guide, torch.tanh(upsampled / 8.0), clicks, prior], dim=1))
