"""Interactive 3D SAM prediction on model-space volumes: crop placement, cached embeddings, border following."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lib.cache import BoundedCache
from lib.engine.autozoom import ZOOM_LADDER
from lib.engine.model_store import ModelStore
from lib.model import Sam3D
from lib.model.mask_refiner import MaskRefiner3D
from lib.prompts.channels import PromptChannels, crop_channels
from lib.prompts.geometry import (
    Crop,
    apply_affine,
    crop_cover,
    mask_to_crop_logits,
    original_to_volume,
    paste_crop_mask,
    place_crop,
    sample_crop,
    true_bounds,
)
from lib.transforms.preprocess import ModelVolume

logger = logging.getLogger(__name__)

REUSE_MARGIN = 32.0  # voxels between a click and the faces of a cached crop it may reuse (its central half)
CLICK_LOGIT = 4.0  # the least confidence a click imposes on the output logits around it
BOX_MARGIN = 1.25  # a box prompt's crop spans its largest side this many times


@dataclass(frozen=True)
class CropLogits:
    """Low-resolution mask logits (1, 1, r, r, r) predicted inside ``crop`` (fed back with the next click) and, for
    models with a mask refiner, the refined logits at half the crop size (what the result is made from)."""

    crop: Crop
    logits: torch.Tensor
    refined: torch.Tensor | None = None

    @property
    def output(self) -> torch.Tensor:
        return self.logits if self.refined is None else self.refined


@dataclass
class Segmentation:
    """One interactive prediction: a coarse pass when the object outgrew the crop, then the fine pass."""

    passes: list[CropLogits]
    model_version: str
    embedding_hits: list[bool] = field(default_factory=list)
    # foreground and background clicks (model-space volume voxels), honoured in the fine pass's result
    clicks: tuple[np.ndarray, np.ndarray] = field(default_factory=lambda: (np.zeros((0, 3)), np.zeros((0, 3))))
    continued: bool = False  # made from the object's previous prediction (its logits fed back)
    # the stored-grid mask to_original_mask made from two passes, bit-packed (the next follow-up may start from it)
    grid_mask: np.ndarray | None = None
    # when this prediction kept the previous one's coarse pass: the previous grid_mask, which is this one's outside
    # the fine crop (see InteractivePredictor.to_original_mask)
    base_mask: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held: the passes' logits and the packed stored-grid mask."""
        logits = sum(t.element_size() * t.nelement() for p in self.passes for t in (p.logits, p.refined)
                     if t is not None)
        return logits + (0 if self.grid_mask is None else self.grid_mask.nbytes)

    @property
    def fine(self) -> CropLogits:
        return self.passes[-1]

    def pass_at(self, crop: Crop) -> CropLogits | None:
        return next((p for p in self.passes if p.crop == crop), None)


def honour_clicks(output: torch.Tensor, crop: Crop, foreground: np.ndarray, background: np.ndarray) -> None:
    """Imposes every click's sign, in place, on the 2x2x2 voxels around it of ``output`` logits (1, 1, n, n, n)
    over ``crop``, so that a click always changes the mask where it was placed: a foreground click lies inside the
    mask and a background click outside, whatever the network predicted there. Applied to the fine pass at the
    crop's full resolution, it changes at most two crop voxels per axis around each click."""
    n = output.shape[-1]
    for points, sign in ((foreground, 1.0), (background, -1.0)):
        if len(points) == 0:
            continue
        # continuous output index of each click (the output spans the crop with align_corners=False)
        position = (apply_affine(crop.volume_to_crop, points) + 0.5) * (n / crop.size) - 0.5
        for low in np.floor(position).astype(int):
            if np.any(low < -1) or np.any(low > n - 1):
                continue
            region = (0, 0, *(slice(max(v, 0), min(v + 2, n)) for v in low))
            output[region] = sign * torch.clamp(sign * output[region], min=CLICK_LOGIT)


def crop_prompts(crop: Crop, foreground: np.ndarray, background: np.ndarray,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Clicks in model-space volume voxels as the network's (1, N, 3) crop-voxel points and (1, N) labels."""
    points = np.concatenate([foreground, background]).reshape(-1, 3)
    labels = np.concatenate([np.ones(len(foreground)), np.zeros(len(background))])
    coords = torch.as_tensor(apply_affine(crop.volume_to_crop, points), dtype=torch.float32, device=device)
    return coords[None], torch.as_tensor(labels, dtype=torch.int64, device=device)[None]


def touches_open_border(logits: torch.Tensor, crop: Crop, volume_shape: tuple[int, ...],
                        any_face: bool = False) -> bool:
    """True when the mask reaches a crop face behind which the volume continues (``any_face``: any crop face)."""
    mask = logits[0, 0] > 0
    low, high = crop.extent()
    for axis in range(3):
        first = mask.select(axis, 0).any()
        last = mask.select(axis, mask.shape[axis] - 1).any()
        if (first and (any_face or low[axis] > 0.0)) or (last and (any_face or high[axis] < volume_shape[axis] - 1.0)):
            return True
    return False


class InteractivePredictor:
    """Runs click-prompted segmentation, caching image embeddings per (image, crop, model version)."""

    def __init__(self, models: ModelStore, embedding_cache_bytes: int = 1 << 30, max_zoom: float = 3.0,
                 autozoom: bool | None = None):
        """``autozoom`` None: on for objects a mask refiner serves (trained across zooms), off for the official
        layouts, which keep their 1.5 mm crops, and for classes the decoder serves alone."""
        self.models = models
        self.embeddings = BoundedCache(embedding_cache_bytes)
        self.guides = BoundedCache(embedding_cache_bytes)
        self.max_zoom = max_zoom
        self.autozoom = autozoom
        self._version: str | None = None

    def model(self) -> tuple[Sam3D, str]:
        """The current network; embeddings made by earlier weights are dropped when the weights change."""
        model, version = self.models.get()
        if version != self._version:
            dropped = self.embeddings.discard(lambda key: key[2] != version)
            if self._version is not None:
                logger.info("Model changed to %s; dropped %d cached embeddings", version, dropped)
            self._version = version
        return model, version

    def embedding(self, model: Sam3D, version: str, volume: ModelVolume, crop: Crop) -> tuple[torch.Tensor, bool]:
        """The image embedding of ``crop``, computed once per model version."""

        def encode() -> torch.Tensor:
            device = next(model.parameters()).device
            image = sample_crop(volume.image, crop)[None].to(device)
            with torch.no_grad():
                return model.encode(image)

        return self.embeddings.get_or_compute((volume.source, crop, version), encode)

    def predict(self, model: Sam3D, volume: ModelVolume, crop: Crop, embedding: torch.Tensor, foreground: np.ndarray,
                background: np.ndarray, previous: CropLogits | None = None,
                previous_logits: torch.Tensor | None = None, refine: bool = True,
                channels: PromptChannels | None = None) -> CropLogits:
        """The decoder's logits in ``crop`` and, when ``refine`` and the model has a mask refiner, their refinement
        with the clicks (and a ``prompts`` refiner's box and stroke ``channels``), each fed its own previous output
        (``previous``, or ``previous_logits`` from an uploaded mask)."""
        points, labels = crop_prompts(crop, foreground, background, embedding.device)
        prior = previous.logits if previous is not None else previous_logits
        logits = self.decode(model, embedding, points, labels, prior)
        if not refine or model.mask_refiner is None:
            return CropLogits(crop, logits)
        guide, _ = self.guides.get_or_compute(
            (volume.source, crop), lambda: MaskRefiner3D.guide(sample_crop(volume.image, crop)[None])
        )
        refined_prior = previous.output if previous is not None else previous_logits
        device = embedding.device
        prompts = None
        if channels is not None and model.takes_prompt_channels:
            orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
            prompts = crop_channels(channels, crop, orig_to_vol, guide.shape[-1]).to(device)
        with torch.no_grad():
            refined = model.refine(logits.to(device), guide.to(device), points, labels,
                                   None if refined_prior is None else refined_prior.to(device), prompts)
        return CropLogits(crop, logits, refined.cpu())

    def uses_autozoom(self, refine: bool) -> bool:
        """Auto-zoom for objects the refiner serves (trained across zooms), unless ``--conf autozoom`` says."""
        return refine if self.autozoom is None else self.autozoom

    def zoomed_in(self, model: Sam3D, version: str, volume: ModelVolume, foreground: np.ndarray,
                  background: np.ndarray, refine: bool,
                  channels: PromptChannels | None = None) -> tuple[CropLogits, bool] | None:
        """The first crop of :data:`ZOOM_LADDER` (centred on the foreground clicks, holding them) whose mask stays
        off every crop face: its prediction and whether its embedding was cached. None when the object outgrows
        all."""
        shape = tuple(volume.image.shape[1:])
        for zoom in ZOOM_LADDER:
            crop = place_crop(foreground.mean(axis=0), shape, size=model.img_size, zoom=zoom)
            if not crop.contains(foreground, margin=2.0):
                continue
            embedding, hit = self.embedding(model, version, volume, crop)
            prediction = self.predict(model, volume, crop, embedding, foreground, background, refine=refine,
                                      channels=channels)
            if not touches_open_border(prediction.output, crop, shape, any_face=True):
                return prediction, hit
        return None

    @staticmethod
    def decode(model: Sam3D, embedding: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
               previous: torch.Tensor | None) -> torch.Tensor:
        """The decoder's low-res mask logits for :func:`crop_prompts` and the previous logits."""
        device = embedding.device
        foreground = int((labels == 1).sum())
        ambiguous = model.answers_with_three_masks(foreground, int((labels == 0).sum()), previous is not None)
        with torch.no_grad():
            logits, iou = model.decode(
                embedding,
                points=points,
                labels=labels,
                mask_logits=None if previous is None else previous.to(device),
                multimask_output=ambiguous,
            )
        if ambiguous:  # the most confident of the three masks
            best = int(iou[0].argmax())
            logits = logits[:, best : best + 1]
        return logits.cpu()

    def fine_crop(self, volume: ModelVolume, foreground: np.ndarray, anchor: np.ndarray | None,
                  previous_crop: Crop | None, zoom: float = 1.0) -> Crop:
        """Keep the previous crop while every foreground click stays well inside it; otherwise reuse a crop whose
        embedding is already cached (for example from ``protosam3d``) if it holds the clicks well inside, or centre
        a new one (at ``zoom``) on ``anchor`` (a box centre) if given, else on the foreground clicks."""
        model, version = self.model()
        if previous_crop is not None and previous_crop.zoom <= 1.0 and previous_crop.contains(
                foreground, margin=4.0 * previous_crop.zoom):
            return previous_crop
        center = anchor if anchor is not None else foreground.mean(axis=0)
        cached = [key[1] for key in self.embeddings.keys() if key[0] == volume.source and key[2] == version
                  and key[1].zoom == 1.0 and key[1].contains(foreground, margin=REUSE_MARGIN)]
        if cached and anchor is None:
            return min(cached, key=lambda crop: float(np.linalg.norm(
                np.asarray(crop.origin) + (crop.size - 1) / 2.0 - center)))
        return place_crop(center, tuple(volume.image.shape[1:]), size=model.img_size, zoom=zoom)

    @staticmethod
    def box_zoom(model: Sam3D, extent: np.ndarray) -> float:
        """The finest zoom of :data:`ZOOM_LADDER` (else the model spacing) whose crop spans a box of ``extent``
        model voxels with :data:`BOX_MARGIN` to spare."""
        return next((z for z in ZOOM_LADDER if model.img_size * z >= BOX_MARGIN * float(np.max(extent))), 1.0)

    def coarse_crop(self, volume: ModelVolume, fine: Crop) -> Crop | None:
        """A zoomed-out crop covering the whole volume (up to ``max_zoom``), or None if the fine crop already does."""
        shape = np.asarray(volume.image.shape[1:])
        zoom = min(max(1.5, float(np.ceil(2.0 * shape.max() / fine.size) / 2.0)), self.max_zoom)
        if fine.size >= shape.max():
            return None
        center = np.asarray(fine.origin) + (fine.size - 1) / 2.0
        return place_crop(center, tuple(shape), size=fine.size, zoom=zoom)

    def segment(
        self,
        volume: ModelVolume,
        foreground: np.ndarray,
        background: np.ndarray,
        previous: Segmentation | None = None,
        previous_mask: torch.Tensor | None = None,
        anchor: np.ndarray | None = None,
        follow_border: bool = True,
        label: str | None = None,
        box_extent: np.ndarray | None = None,
        channels: PromptChannels | None = None,
    ) -> Segmentation:
        """Predict the object marked by clicks (model-space voxel coordinates).

        ``previous`` (the last prediction for the same object) feeds its logits back as the mask prompt, as SAM-Med3D
        does between clicks. With auto-zoom, a new crop (first click, or a click outside the current crop) starts
        zoomed in and zooms out while the mask reaches its faces (:data:`ZOOM_LADDER`, then the model spacing);
        follow-up clicks inside that crop reuse its embedding. When the fine mask reaches an open crop face, a coarser
        pass over the whole volume supplies the mask outside the fine crop. ``label`` names the object: the mask
        refiner serves it unless the decoder was trained on it (:meth:`Sam3D.refines`). ``previous_mask`` (bool, on
        the stored image's grid) is the mask prompt of an object without ``previous``; ``anchor`` (model-space
        voxel) centres a new crop, which auto-zoom sizes to a box of ``box_extent`` model voxels around it.
        ``channels`` are the region prompts a ``prompts`` refiner sees (:mod:`lib.prompts.channels`).
        """
        model, version = self.model()
        refine = model.refines(label)
        if previous is not None and previous.model_version != version:
            previous = None
        previous_crop = previous.fine.crop if previous else None
        zoom = self.box_zoom(model, box_extent) if box_extent is not None and self.uses_autozoom(refine) else 1.0
        fine = self.fine_crop(volume, foreground, anchor, previous_crop, zoom)
        prior = previous.pass_at(fine) if previous else None
        previous_fine_logits = None
        if previous_mask is not None and previous is None:
            orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
            previous_fine_logits = mask_to_crop_logits(previous_mask, fine, orig_to_vol, model.low_res_size)
        shape = tuple(volume.image.shape[1:])
        zoomed = None
        if (fine != previous_crop and prior is None and previous_fine_logits is None and anchor is None
                and self.uses_autozoom(refine)):
            zoomed = self.zoomed_in(model, version, volume, foreground, background, refine, channels)
        if zoomed is not None:
            prediction, hit = zoomed
        else:
            embedding, hit = self.embedding(model, version, volume, fine)
            prediction = self.predict(model, volume, fine, embedding, foreground, background, prior,
                                      previous_fine_logits, refine, channels)
        fine, passes, hits = prediction.crop, [prediction], [hit]
        base_mask = None
        if follow_border and fine.zoom >= 1.0 and touches_open_border(prediction.output, fine, shape):
            coarse = self.coarse_crop(volume, fine)
            kept = self.kept_coarse_pass(previous, fine, coarse, foreground, background)
            if kept is not None:
                passes.insert(0, kept)
                hits.insert(0, True)
                base_mask = previous.grid_mask
            elif coarse is not None:
                logger.info("Object reaches the crop border; adding a coarse pass at zoom %.1f", coarse.zoom)
                coarse_embedding, coarse_hit = self.embedding(model, version, volume, coarse)
                passes.insert(0, self.predict(model, volume, coarse, coarse_embedding, foreground, background,
                                              previous.pass_at(coarse) if previous else None, refine=refine,
                                              channels=channels))
                hits.insert(0, coarse_hit)
        return Segmentation(passes=passes, model_version=version, embedding_hits=hits, clicks=(foreground, background),
                            continued=previous is not None, base_mask=base_mask)

    @staticmethod
    def kept_coarse_pass(previous: Segmentation | None, fine: Crop, coarse: Crop | None, foreground: np.ndarray,
                         background: np.ndarray) -> CropLogits | None:
        """The previous prediction's coarse pass when a follow-up stays in its fine crop: every click added since
        lies inside that crop, so the correction is made there, and the coarse pass (the mask outside the crop)
        is kept rather than decoded again. On the starter's white and grey matter, whose masks reach the crop
        border, this changed Dice after 3, 5 and 10 clicks by at most 0.005 and halves a follow-up's model time."""
        if previous is None or coarse is None or previous.fine.crop != fine:
            return None
        old_foreground, old_background = previous.clicks
        added = np.concatenate([foreground[len(old_foreground):], background[len(old_background):]]).reshape(-1, 3)
        return previous.pass_at(coarse) if fine.contains(added) else None

    @staticmethod
    def to_original_mask(volume: ModelVolume, segmentation: Segmentation) -> torch.Tensor:
        """The mask on the stored image's grid: each pass's logits upsampled to its crop and thresholded (as the
        reference does), then looked up by nearest neighbour; the fine pass overwrites the coarse one. Its memory is
        in Fortran order (the first axis fastest), as NIfTI and NRRD files store voxels, so writing it needs no
        transposed copy.

        A segmentation that kept its previous one's coarse pass (a follow-up inside the same fine crop) starts from
        the previous mask, whose voxels outside the fine crop are that coarse pass's, and pastes only the fine pass:
        the same mask for less than half the work. A mask made from two passes is kept with the segmentation,
        bit-packed (1 bit per voxel), for the next follow-up."""
        shape = volume.original_shape
        if segmentation.base_mask is not None:
            voxels = np.unpackbits(segmentation.base_mask, count=int(np.prod(shape))).view(bool)
            out = torch.from_numpy(voxels.reshape(shape, order="F"))
            _paste_passes(volume, segmentation, out, lambda logits: logits > 0, positive_only=True, only_fine=True)
        else:
            out = torch.zeros(shape[::-1], dtype=torch.bool).permute(2, 1, 0)
            _paste_passes(volume, segmentation, out, lambda logits: logits > 0, positive_only=True)
        segmentation.base_mask = None  # the previous mask is no longer needed
        if len(segmentation.passes) > 1:
            segmentation.grid_mask = np.packbits(out.numpy().ravel(order="F"))
        return out

    @staticmethod
    def to_original_logits(volume: ModelVolume, segmentation: Segmentation) -> torch.Tensor:
        """Like :meth:`to_original_mask`, but the upsampled logits themselves (-inf where no pass reaches)."""
        out = torch.full(volume.original_shape, float("-inf"))
        _paste_passes(volume, segmentation, out, lambda logits: logits, positive_only=False)
        return out


def upsampled_output(output: torch.Tensor, crop: Crop, positive_only: bool) -> torch.Tensor:
    """A pass's (1, 1, r, r, r) output logits upsampled trilinearly to its crop's size (as the reference does).

    ``positive_only``: only the box around the positive logits, one low-res voxel wider, is upsampled (every other
    output voxel interpolates non-positive logits only) and the rest is -1, so that thresholding at zero gives the
    same mask for less work."""
    size = (crop.size,) * 3
    r = output.shape[-1]
    if not positive_only or crop.size % r:
        return F.interpolate(output, size=size, mode="trilinear", align_corners=False)
    scale = crop.size // r
    out = torch.full((1, 1, *size), -1.0)
    bounds = true_bounds(output[0, 0] > 0)
    if bounds is not None:
        box = tuple(slice(max(low - 1, 0), min(high + 1, r)) for low, high in bounds)
        part = F.interpolate(output[(0, 0, *box)][None, None], scale_factor=scale, mode="trilinear",
                             align_corners=False)
        out[(0, 0, *(slice(b.start * scale, b.stop * scale) for b in box))] = part[0, 0]
    return out


def _paste_passes(volume: ModelVolume, segmentation: Segmentation, out: torch.Tensor, values,
                  positive_only: bool, only_fine: bool = False) -> None:
    """Pastes the coarse pass (if any, and not ``only_fine``), then the fine one; the coarse pass skips the voxels
    the fine pass writes."""
    orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
    fine = segmentation.fine
    passes = [fine] if only_fine else segmentation.passes
    fine_cover = crop_cover(fine.crop, orig_to_vol, volume.original_shape) if len(passes) > 1 else None
    for p in passes:
        upsampled = upsampled_output(p.output, p.crop, positive_only)
        if p is fine:
            honour_clicks(upsampled, p.crop, *segmentation.clicks)  # whatever the value, so also outside the box
        paste_crop_mask(values(upsampled[0, 0]), p.crop, orig_to_vol, volume.original_shape, out,
                        keep=None if p is fine else fine_cover)
