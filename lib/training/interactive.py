"""Simulated interactive training (SAM-Med3D style): clicks accumulate and previous logits are fed back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss

from lib.model import Sam3D
from lib.model.mask_refiner import MaskRefiner3D
from lib.prompts.clicks import next_click

LOSS_STRIDE = 2  # loss and next clicks on a half-resolution grid of the crop: 8x cheaper on a CPU, same clicks


def random_foreground_voxel(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn foreground voxel (SAM-Med3D's first training click)."""
    voxels = np.flatnonzero(target)
    return np.asarray(np.unravel_index(int(rng.choice(voxels)), target.shape), dtype=np.float64)


@dataclass
class ClickOutcome:
    """What a simulated interaction on one crop gave."""

    loss: torch.Tensor  # mean over clicks, plus the mask refiner's loss on one of them
    dices: list[float]  # after each click (decoder logits, before refinement)
    predictions: list[torch.Tensor]  # (1, 1, S/2, S/2, S/2) bool after each click
    target: torch.Tensor  # (1, 1, S/2, S/2, S/2) float, the half-resolution target


def simulated_click_loss(
    model: Sam3D,
    image: torch.Tensor,
    target: torch.Tensor,
    num_clicks: int,
    loss_fn: DiceCELoss,
    rng: np.random.Generator,
    random_first_click: float = 0.5,
) -> ClickOutcome:
    """Loss averaged over ``num_clicks`` simulated clicks on one crop.

    ``image`` (1, 1, S, S, S) and binary ``target`` (1, 1, S, S, S). The first click is a random foreground voxel
    (with probability ``random_first_click``) or the most interior one; each next click sits in the largest error
    region of the current prediction and is foreground or background by the target there. The encoder runs once;
    the mask decoder once per click with the previous low-res logits (detached) as mask prompt. The IoU head learns
    the achieved IoU (MSE). Loss, Dice and next clicks use the logits upsampled to half the crop size. A model with
    a mask refiner also learns to refine the (detached) logits of one random click against the same target.
    """
    size = image.shape[-1] // LOSS_STRIDE
    target_np = target[0, 0].numpy() > 0.5
    target = (F.avg_pool3d(target, LOSS_STRIDE) > 0.5).float()
    coarse_target = target[0, 0].numpy() > 0.5
    embedding = model.encode(image)
    if rng.random() < random_first_click:
        points = [random_foreground_voxel(target_np, rng)]
    else:  # the evaluation protocol's first click: the most interior target voxel
        points = [next_click(np.zeros_like(coarse_target), coarse_target)[0] * LOSS_STRIDE + (LOSS_STRIDE - 1) / 2.0]
    labels = [1]
    previous = None
    total = image.new_zeros(())
    dices, predictions, low_res = [], [], []
    for _ in range(num_clicks):
        coords = torch.as_tensor(np.stack(points), dtype=torch.float32)[None]
        logits, iou = model.decode(
            embedding, points=coords, labels=torch.as_tensor(labels)[None], mask_logits=previous
        )
        upsampled = F.interpolate(logits, size=(size,) * 3, mode="trilinear", align_corners=False)
        with torch.no_grad():
            prediction = upsampled > 0
            inter = (prediction & (target > 0.5)).sum().float()
            union = (prediction | (target > 0.5)).sum().float().clamp(min=1)
            dices.append(float(2 * inter / (prediction.sum() + (target > 0.5).sum()).clamp(min=1)))
            predictions.append(prediction)
        total = total + loss_fn(upsampled, target) + F.mse_loss(iou[:, :1], (inter / union).reshape(1, 1))
        previous = logits.detach()
        low_res.append(previous)
        click = next_click(prediction[0, 0].numpy(), coarse_target)
        if click is None:
            break
        point, is_foreground = click
        points.append(point * LOSS_STRIDE + (LOSS_STRIDE - 1) / 2.0)
        labels.append(int(is_foreground))
    loss = total / len(dices)
    if model.mask_refiner is not None:
        chosen = low_res[int(rng.integers(len(low_res)))]
        loss = loss + loss_fn(model.refine(chosen, MaskRefiner3D.guide(image)), target)
    return ClickOutcome(loss, dices, predictions, target)
