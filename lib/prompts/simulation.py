"""The simulated annotator, the one home of every click loop: where the first and the next click go, and the click
session that feeds each prediction back. Pretraining and the adapter trainer run it on training crops through the
network (:func:`simulated_click_loss`); the evaluation, the benchmarks and the server tests run it on stored images
through the serving predictor or a classical baseline (:func:`run_session`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from scipy import ndimage

from lib.engine.predictor import InteractivePredictor
from lib.model import Sam3D
from lib.model.mask_refiner import MaskRefiner3D
from lib.prompts.clicks import Click
from lib.prompts.geometry import Crop, apply_affine, mask_to_crop_logits, original_to_volume
from lib.prompts.gestures import stroke_through
from lib.prompts.grid_prompts import GridPrompts
from lib.transforms.preprocess import ModelVolume

Segmenter = Callable[[list[Click]], np.ndarray]  # every click so far -> mask on the target's grid
Tried = tuple[np.ndarray, float]  # (voxel index, radius in voxels): a spot where a click did not take

LOSS_STRIDE = 2  # training loss and next clicks on a half-resolution grid of the crop: 8x cheaper, same clicks


def next_click(prediction: np.ndarray, target: np.ndarray, avoid: Sequence[Tried] = ()) -> Click | None:
    """The click an annotator makes next: the most interior voxel of the largest error region.

    ``avoid`` holds spots where earlier clicks did not take (:func:`tried_spot`): the error voxels within their
    reach are passed over, unless nothing else is wrong. Returns ``(voxel index, is_foreground)``, or None when
    the prediction is already perfect.
    """
    error = prediction.astype(bool) ^ target.astype(bool)
    if not error.any():
        return None
    candidates = error
    if avoid:
        candidates = error.copy()
        for point, radius in avoid:
            clear_ball(candidates, point, radius)
        if not candidates.any():
            candidates = error
    depth, corner = region_depth(largest_region(candidates))
    point = np.unravel_index(int(np.argmax(depth)), depth.shape) + corner
    return point.astype(np.int64), bool(target[tuple(point)])


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest connected region of a non-empty boolean mask."""
    components, count = ndimage.label(mask)
    if count == 1:
        return mask
    return components == (int(np.argmax(np.bincount(components.ravel())[1:])) + 1)


def region_depth(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each voxel's distance to the outside of a non-empty ``region``, over the region's bounding box, and the box's
    first corner."""
    bounds = ndimage.find_objects(region.astype(np.uint8))[0]
    depth = ndimage.distance_transform_edt(np.pad(region[bounds], 1))[1:-1, 1:-1, 1:-1]
    return depth, np.array([b.start for b in bounds])


def clear_ball(mask: np.ndarray, point: np.ndarray, radius: float) -> None:
    """Set ``mask`` False within ``radius`` voxels of ``point``, in place."""
    lo = np.maximum(np.floor(point - radius).astype(int), 0)
    hi = np.minimum(np.ceil(point + radius).astype(int) + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    offsets = np.ogrid[box]
    inside = sum((o - float(c)) ** 2 for o, c in zip(offsets, point, strict=True)) <= radius**2
    mask[box] &= ~inside


def tried_spot(error: np.ndarray, point: np.ndarray) -> Tried:
    """Where a click that did not take leaves the annotator looking elsewhere: around ``point``, within twice its
    depth in the error region it was placed in (``error``, before the click), the reach a correction click has
    (:func:`lib.prompts.local_edit.click_reach`)."""
    components, _ = ndimage.label(error)
    depth, corner = region_depth(components == components[tuple(point)])
    return point, 2.0 * float(depth[tuple(np.asarray(point) - corner)])


def split_clicks(clicks: list[Click]) -> tuple[np.ndarray, np.ndarray]:
    """Clicks as (N, 3) foreground and (M, 3) background voxel arrays."""
    foreground = np.asarray([p for p, fg in clicks if fg], dtype=np.float64).reshape(-1, 3)
    background = np.asarray([p for p, fg in clicks if not fg], dtype=np.float64).reshape(-1, 3)
    return foreground, background


def next_scribble(prediction: np.ndarray, target: np.ndarray, axis: int = 2) -> tuple[np.ndarray, bool] | None:
    """The stroke an annotator paints next (:func:`stroke_through` :func:`next_click`'s voxel). Returns ``(bool
    stroke mask, is_foreground)``, or None when the prediction is already perfect."""
    click = next_click(prediction, target)
    if click is None:
        return None
    return stroke_through(prediction, target, click[0], axis), click[1]


def first_click(target: np.ndarray) -> np.ndarray:
    """The evaluation protocol's first click: the most interior voxel of the (largest part of the) object."""
    click = next_click(np.zeros_like(target, dtype=bool), target)
    if click is None:
        raise ValueError("empty target: nothing to click")
    return click[0]


def random_foreground_voxel(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn foreground voxel (SAM-Med3D's first training click)."""
    voxels = np.flatnonzero(target)
    return np.asarray(np.unravel_index(int(rng.choice(voxels)), target.shape), dtype=np.int64)


def dice(prediction: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    prediction, target = np.asarray(prediction, dtype=bool), np.asarray(target, dtype=bool)
    total = prediction.sum() + target.sum()
    return float(2.0 * np.logical_and(prediction, target).sum() / total) if total else 1.0


@dataclass
class ClickSession:
    """What a simulated annotator achieved on one object: Dice, clicks and seconds of segmenting after each click."""

    dices: list[float]
    clicks: list[Click]
    seconds: list[float]


def run_session(segment: Segmenter, target: np.ndarray, max_clicks: int, min_clicks: int = 0,
                stop_dice: float | None = None, first: np.ndarray | None = None,
                start: np.ndarray | None = None, paints: bool = False) -> ClickSession:
    """Click until ``max_clicks``, or stop once at least ``min_clicks`` were made and Dice reached ``stop_dice``.

    Each click goes to the most interior voxel of the largest error region (``first``, when given, replaces the
    first one), passing over the spots where earlier clicks did not take, as an annotator moves on; ``segment``
    sees all clicks so far and keeps its own state, such as the previous prediction. A perfect prediction needs no
    more clicks: its Dice is repeated up to ``max_clicks``. ``start`` is the mask the annotator begins from (an
    automatic result; empty by default): when it already reaches ``stop_dice``, the session makes no click.
    ``paints``: each click stands for a stroke painted through it, which holds its own voxels, so whether it took
    is judged around it (:func:`took`).
    """
    target = np.asarray(target, dtype=bool)
    prediction = np.zeros(target.shape, dtype=bool) if start is None else np.asarray(start, dtype=bool)
    session = ClickSession([], [], [])
    if start is not None and stop_dice is not None and min_clicks == 0 and dice(prediction, target) >= stop_dice:
        return session
    avoid: list[Tried] = []
    while len(session.dices) < max_clicks:
        click = (first, True) if first is not None and not session.clicks else next_click(prediction, target, avoid)
        if click is None:
            session.dices += [session.dices[-1] if session.dices else 1.0] * (max_clicks - len(session.dices))
            break
        session.clicks.append(click)
        start = time.perf_counter()
        before, prediction = prediction, np.asarray(segment(session.clicks), dtype=bool)
        session.seconds.append(time.perf_counter() - start)
        reach = tried_spot(before ^ target, click[0]) if paints else None
        if not took(before, prediction, target, click[0], reach):
            avoid.append(reach or tried_spot(before ^ target, click[0]))
        session.dices.append(dice(prediction, target))
        if stop_dice is not None and len(session.dices) >= min_clicks and session.dices[-1] >= stop_dice:
            break
    return session


def took(before: np.ndarray, after: np.ndarray, target: np.ndarray, point: np.ndarray,
         painted_reach: Tried | None = None) -> bool:
    """Whether the interaction at ``point`` fixed what it pointed at: a click, its own voxel (or it was right
    already); a painted stroke, which always holds its own voxels, at least half of the error that was within
    ``painted_reach`` (its :func:`tried_spot`)."""
    spot = tuple(point)
    if painted_reach is None:
        return before[spot] == target[spot] or after[spot] == target[spot]
    outside = np.ones(target.shape, dtype=bool)
    clear_ball(outside, *painted_reach)
    reach = (before ^ target) & ~outside
    return int((reach & (after ^ target)).sum()) * 2 <= int(reach.sum())


def clicks_to_reach(dices: list[float], threshold: float, cap: int) -> int:
    """NoC: the number of clicks after which Dice first reaches ``threshold`` (``cap`` when it never does)."""
    return next((n for n, d in enumerate(dices[:cap], start=1) if d >= threshold), cap)


def predictor_segmenter(predictor: InteractivePredictor, volume: ModelVolume, label: str | None = None) -> Segmenter:
    """Clicks on the stored image's grid -> the serving predictor's mask there for the object named ``label``,
    feeding each prediction back as the next one's mask prompt (as Slicer's follow-up clicks do)."""
    orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
    state = {"previous": None}

    def segment(clicks: list[Click]) -> np.ndarray:
        foreground, background = split_clicks(clicks)
        state["previous"] = predictor.segment(volume, apply_affine(orig_to_vol, foreground),
                                              apply_affine(orig_to_vol, background), previous=state["previous"],
                                              label=label)
        return predictor.to_original_mask(volume, state["previous"]).numpy()

    return segment


@dataclass
class ClickOutcome:
    """What a simulated interaction on one training crop gave."""

    loss: torch.Tensor  # the decoder's loss averaged over clicks (when trained) plus the refiner's on the last click
    dices: list[float]  # after each click (the refined mask for models with a refiner)
    predictions: list[torch.Tensor]  # (1, 1, S/2, S/2, S/2) bool after each click
    target: torch.Tensor  # (1, 1, S/2, S/2, S/2) float, the half-resolution target


def simulated_click_loss(model: Sam3D, image: torch.Tensor, target: torch.Tensor, num_clicks: int, loss_fn: DiceCELoss,
                         rng: np.random.Generator, random_first_click: float = 0.5,
                         train_decoder: bool = True, refine: bool = True, prompt: str = "clicks") -> ClickOutcome:
    """The click session on one training crop, through the network, as the predictor runs it.

    ``image`` (1, 1, S, S, S) and binary ``target`` (1, 1, S, S, S). The session runs on the half-resolution grid
    of the crop (``LOSS_STRIDE``). The first click is a random foreground voxel (with probability
    ``random_first_click``) or the most interior one; the next ones follow :func:`next_click` on the previous
    result. The encoder runs once; the mask decoder once per click with its previous low-res logits (detached) as
    mask prompt; a model with ``multimask_first_click`` answers the first click with three masks, of which the
    closest to the target learns and is fed back, and the IoU head learns the achieved IoU (MSE). With
    ``train_decoder`` False the encoder and decoder run without gradients. With ``refine``, a model with a mask
    refiner refines every click's logits with the click maps and its own previous result, and learns on the last
    click (the earlier ones only set up the situation, as in DeepGrow's and nnInteractive's click simulation).
    ``prompt`` (:data:`lib.prompts.grid_prompts.PROMPT_KINDS`) makes the session a box, lasso or scribble session
    as the predictor serves it (:class:`lib.prompts.grid_prompts.GridPrompts`): the region's clicks and prior, and
    its dense channels for a ``prompts`` refiner.
    """
    size = image.shape[-1] // LOSS_STRIDE
    target = (F.avg_pool3d(target, LOSS_STRIDE) > 0.5).float()
    coarse = target[0, 0].numpy() > 0.5
    prompts = GridPrompts(prompt, coarse, rng)
    with torch.set_grad_enabled(train_decoder and torch.is_grad_enabled()):
        embedding = model.encode(image)
    guide = MaskRefiner3D.guide(image) if refine and model.mask_refiner is not None else None
    decoder_losses: list[torch.Tensor] = []
    predictions: list[torch.Tensor] = []
    low_res: list[torch.Tensor] = []
    refined: list[torch.Tensor] = []
    refiner_inputs: list[tuple] = []
    prior: list[torch.Tensor | None] = []  # the region's mask prompt as low-res logits, set at the first click

    def segment(clicks: list[Click]) -> np.ndarray:
        shown = predictions[-1][0, 0].numpy() if predictions else np.zeros_like(coarse)
        sent = prompts.network_clicks(clicks, shown)
        points = torch.as_tensor(np.stack([p for p, _ in sent]) * LOSS_STRIDE + (LOSS_STRIDE - 1) / 2.0,
                                 dtype=torch.float32)[None]
        labels = torch.as_tensor([int(fg) for _, fg in sent])[None]
        if not prior:
            prior.append(None if prompts.prior is None else mask_to_crop_logits(
                torch.from_numpy(prompts.prior), Crop((0.0, 0.0, 0.0), size), np.eye(4), model.low_res_size))
        previous = low_res[-1] if low_res else prior[0]
        foreground = int(labels.sum())
        ambiguous = model.answers_with_three_masks(foreground, len(sent) - foreground, previous is not None)
        with torch.set_grad_enabled(train_decoder and torch.is_grad_enabled()):
            logits, iou = model.decode(embedding, points=points, labels=labels, mask_logits=previous,
                                       multimask_output=ambiguous)
            upsampled = F.interpolate(logits, size=(size,) * 3, mode="trilinear", align_corners=False)
            masks = (upsampled > 0).detach()
            # with three ambiguity masks only the one closest to the target learns (Segment Anything's minimum loss)
            mask_losses = torch.stack([loss_fn(upsampled[:, i : i + 1], target) for i in range(logits.shape[1])])
            best = int(mask_losses.argmin())
            if train_decoder:
                inter = (masks & (target > 0.5)).flatten(2).sum(-1).float()
                union = (masks | (target > 0.5)).flatten(2).sum(-1).float().clamp(min=1)
                decoder_losses.append(mask_losses[best] + F.mse_loss(iou, inter / union))
        prediction = masks[:, best : best + 1]
        low_res.append(logits[:, best : best + 1].detach())
        if guide is not None:
            refiner_inputs.append((low_res[-1], guide, points, labels, refined[-1].detach() if refined else prior[0],
                                   prompts.channels()))
            # gradients only through the click the refiner learns on: the session's last
            with torch.set_grad_enabled(len(clicks) == num_clicks and torch.is_grad_enabled()):
                refined.append(model.refine(*refiner_inputs[-1]))
            prediction = refined[-1].detach() > 0
        prediction = prompts.served(prediction[0, 0])[None, None]
        predictions.append(prediction)
        return prediction[0, 0].numpy()

    first = prompts.first_click()
    if first is None and rng.random() < random_first_click:
        first = random_foreground_voxel(coarse, rng)
    session = run_session(segment, coarse, num_clicks, first=first, paints=prompts.paints)
    losses = [torch.stack(decoder_losses).mean()] if decoder_losses else []
    if guide is not None:  # the refiner learns on the session's last click (a perfect mask ends it early: rerun)
        losses.append(loss_fn(refined[-1] if len(refined) == num_clicks else model.refine(*refiner_inputs[-1]),
                              target))
    return ClickOutcome(sum(losses), session.dices[: len(predictions)], predictions, target)

