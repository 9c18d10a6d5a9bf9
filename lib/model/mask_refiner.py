"""High-resolution mask refinement (in the spirit of HQ-SAM): the decoder's 1/4-resolution logits, upsampled to
half the crop size, are corrected by a small convolutional branch that sees the crop image at that resolution, so
masks follow image edges below the 32^3 logit grid."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

REFINE_STRIDE = 2  # the refined logits have half the crop's size along each axis


class MaskRefiner3D(nn.Module):
    """``refined = upsampled logits + conv([upsampled logits, image])``; the last convolution starts at zero, so an
    untrained refiner returns the upsampled logits unchanged."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(2, channels, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv3d(channels, channels, kernel_size=3, padding=2, dilation=2),
            nn.GELU(),
            nn.Conv3d(channels, 1, kernel_size=3, padding=1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    @staticmethod
    def guide(image: torch.Tensor) -> torch.Tensor:
        """The (B, 1, S, S, S) crop image at the refiner's resolution."""
        return F.avg_pool3d(image, REFINE_STRIDE)

    def forward(self, low_res_logits: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """(B, 1, r, r, r) logits and the :meth:`guide` of the crop -> (B, 1, S/2, S/2, S/2) refined logits."""
        upsampled = F.interpolate(low_res_logits, size=guide.shape[-3:], mode="trilinear", align_corners=False)
        # logits can be large: a bounded copy keeps the convolutions in their trained range
        features = torch.cat([torch.tanh(upsampled / 8.0), guide], dim=1)
        return upsampled + self.body(features)
