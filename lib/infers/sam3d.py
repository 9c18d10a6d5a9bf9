"""``sam3d``: interactive 3D SAM segmentation from foreground/background clicks (MONAI Label DeepGrow task)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage
from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.engine.predictor import InteractivePredictor, Segmentation
from lib.engine.sessions import ObjectSessions, mask_digest
from lib.errors import InvalidRequest, UnreadableImage
from lib.infers.base import ModelSpaceInferTask
from lib.prompts.box import box_prompt, request_box
from lib.prompts.channels import combined
from lib.prompts.clicks import check_inside, parse_points
from lib.prompts.geometry import apply_affine, original_to_volume
from lib.prompts.lasso import lasso_prompt, parse_lasso, reach_box
from lib.prompts.local_edit import local_correction
from lib.prompts.regions import RegionPrompt, apply_regions
from lib.request_files import is_upload
from lib.segmentation.head import HeadStore
from lib.transforms.preprocess import ModelVolume, VolumeCache

logger = logging.getLogger(__name__)


class Sam3DInfer(ModelSpaceInferTask):
    """Click-prompted 3D SAM.

    Request parameters (as 3D Slicer and OHIF send them):

    - ``foreground`` / ``background``: ``[[i, j, k], ...]`` voxel indices of the stored image;
    - ``label``: name of the object being segmented (clicks on the same image and label refine one object; a class
      the decoder was trained on is served by it alone, anything else by the class-agnostic mask refiner);
    - ``roi`` or ``box`` (optional): ``[[i0, i1], [j0, j1], [k0, k1]]`` or Slicer's flat ``[i0, i1, j0, j1, k0,
      k1]``, a box prompt alone or with clicks (:mod:`lib.prompts.box`): it centres the crop and bounds the result;
    - ``lasso`` (optional): a closed contour ``[[i, j, k], ...]`` on one slice around the object
      (:mod:`lib.prompts.lasso`);
    - an uploaded label file (optional, with the object name in ``label_name``): previous mask to refine.

    Returns a binary mask (1 = object) with the stored image's shape and affine.
    """

    def __init__(
        self,
        predictor: InteractivePredictor,
        volumes: VolumeCache,
        labels: dict[str, int],
        description: str = "Interactive 3D SAM: click inside (foreground) and outside (background) an object",
        sessions: ObjectSessions | None = None,
        type: str = InferType.DEEPGROW,
        heads: HeadStore | None = None,
        correction_radius_mm: float = 0.0,
    ):
        super().__init__(predictor, volumes, labels, type, description)
        self.sessions = sessions or ObjectSessions()
        self.heads = heads
        self.correction_radius_mm = correction_radius_mm

    def corrects_locally(self, name: str) -> bool:
        """Whether clicks on an uploaded label of ``name`` change only the region they point at: for the classes
        the published segmentation head serves, whose automatic labels are good enough that the model's coarser
        answer would undo more than the click fixes (``--conf correction_radius_mm``, 0: never)."""
        head = self.heads.load() if self.heads and self.correction_radius_mm > 0 else None
        return head is not None and name in head.served_classes()

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        volume: ModelVolume = data["volume"]
        shape = volume.original_shape
        foreground = parse_points(data.get("foreground"), "foreground")
        background = parse_points(data.get("background"), "background")
        check_inside(foreground, shape, "foreground")
        check_inside(background, shape, "background")
        regions, box = self.region_prompts(data, shape)
        uploaded = self._uploaded_label(data, shape, "previous label")
        previous_mask = None if uploaded is None or not uploaded.any() else torch.from_numpy(uploaded > 0)
        if uploaded is not None and previous_mask is None:
            logger.info("Uploaded previous label is empty; ignoring it")
        name = str(data.get("label_name") or ("" if uploaded is not None else data.get("label")) or "")
        return self.segment_object(data, volume, foreground, background, regions, previous_mask, name, box)

    @staticmethod
    def region_prompts(data: dict[str, Any], shape: tuple[int, ...]) -> tuple[list[RegionPrompt], np.ndarray | None]:
        """The request's box (``box`` or ``roi``) and lasso as region prompts, and the box that centres and sizes
        the crop (the lasso's reach without a box)."""
        box = request_box(data, shape)
        lasso = parse_lasso(data.get("lasso"), shape)
        regions = ([box_prompt(box, shape)] if box is not None else []) + (
            [lasso_prompt(lasso, shape)] if lasso is not None else [])
        if box is None and lasso is not None:
            box = reach_box(lasso, shape)
        return regions, box

    def segment_object(self, data: dict[str, Any], volume: ModelVolume, foreground: np.ndarray,
                       background: np.ndarray, regions: list[RegionPrompt], previous_mask: torch.Tensor | None,
                       name: str, box: np.ndarray | None) -> dict:
        """:meth:`segment_prompts` for the request's client, its mask and result JSON put into ``data``."""
        start = time.perf_counter()
        mask, segmentation = self.segment_prompts(volume, foreground, background, regions, previous_mask, name, box,
                                                  data.get("client_id"))
        return self.put_result(data, volume, mask, segmentation, [r.kind for r in regions],
                               time.perf_counter() - start)

    def put_result(self, data: dict[str, Any], volume: ModelVolume, mask: torch.Tensor, segmentation: Segmentation,
                   prompts: list[str], seconds: float) -> dict:
        """``mask`` (on the stored grid) and the result JSON, which names the region ``prompts``, put into ``data``."""
        data[self.output_label_key] = MetaTensor(mask, affine=torch.as_tensor(volume.original_affine))
        data[self.output_json_key] = {
            "model_version": segmentation.model_version,
            "embedding_cached": segmentation.embedding_hits,
            "crops": [{"origin": list(p.crop.origin), "zoom": p.crop.zoom} for p in segmentation.passes],
            "refined": segmentation.fine.refined is not None,  # served by the mask refiner, not the decoder alone
            "continued": segmentation.continued,  # from the object's previous prediction, not from scratch
            "prompts": prompts,
            "model_ms": round(seconds * 1000, 1),
            "voxels": int(torch.count_nonzero(mask)),
        }
        return data

    def segment_prompts(self, volume: ModelVolume, foreground: np.ndarray, background: np.ndarray,
                        regions: list[RegionPrompt], previous_mask: torch.Tensor | None, name: str,
                        box: np.ndarray | None, client: Any = None, keep_result: bool = False
                        ) -> tuple[torch.Tensor, Segmentation]:
        """The uint8 mask on the stored grid of the object ``name`` from clicks (stored-image voxels, the regions'
        derived clicks first), an uploaded previous mask (else the session's previous prediction, else the regions'
        prior) and a ``box`` ((3, 2) stored-image voxel bounds; without one, the mask to refine and the clicks) that
        centres and sizes the crop; the regions' bounds and strokes hold in the result. Sessions are kept per
        (image, ``name``, ``client``, region prompts) and continue while the annotator's own clicks extend the
        stored ones, also when the uploaded mask is the one the session started from or the result it last returned
        (a correction re-sends it with every click): then the session's logits, not the upload, are the mask
        prompt. Clicks on an uploaded mask of a class the segmentation head serves change only the region they point at
        (:meth:`corrects_locally`, :func:`lib.prompts.local_edit.local_correction`). ``keep_result`` stores the
        returned mask with the session (:meth:`ObjectState.returned`)."""
        object_key = self.object_key(volume, name, client, regions)
        uploaded = previous_mask
        upload = None if previous_mask is None else mask_digest(previous_mask.numpy())
        previous = self.sessions.previous(object_key, foreground, background, upload)
        own_clicks = foreground, background
        foreground = np.concatenate([*(r.foreground for r in regions), foreground]).reshape(-1, 3)
        background = np.concatenate([*(r.background for r in regions), background]).reshape(-1, 3)
        priors = [r.prior for r in regions if r.prior is not None]
        if len(foreground) == 0 and previous_mask is None and not priors:
            raise InvalidRequest("At least one 'foreground' click (or a box, a lasso or a previous mask) is required")

        if previous is not None:
            previous_mask = None  # the session continues
        orig_to_vol = original_to_volume(volume.original_affine, volume.affine)
        fg_vol = apply_affine(orig_to_vol, foreground)
        bg_vol = apply_affine(orig_to_vol, background)
        if previous is None and previous_mask is None and priors:
            previous_mask = torch.from_numpy(np.logical_or.reduce(priors))
        if box is None and previous_mask is not None:  # the mask to refine, with the clicks, sizes the crop
            voxels = np.concatenate([np.argwhere(previous_mask.numpy()), foreground])
            box = np.stack([voxels.min(axis=0), voxels.max(axis=0)], axis=1)
        anchor, box_extent = None, None
        if box is not None:  # the box's centre and size in model voxels
            corners = apply_affine(orig_to_vol, np.stack(np.meshgrid(*box, indexing="ij"), -1).reshape(-1, 3))
            anchor, box_extent = corners.mean(axis=0), np.ptp(corners, axis=0)

        segmentation = self.predictor.segment(
            volume, fg_vol, bg_vol, previous=previous, previous_mask=previous_mask, anchor=anchor, label=name,
            box_extent=box_extent, channels=combined(r.channels for r in regions),
        )
        mask = apply_regions(self.predictor.to_original_mask(volume, segmentation).to(torch.uint8), regions)
        if uploaded is not None and not regions and self.corrects_locally(name):
            spacing = np.linalg.norm(np.asarray(volume.original_affine)[:3, :3], axis=0)
            mask = torch.from_numpy(local_correction(uploaded.numpy(), mask.numpy() > 0, *own_clicks, spacing,
                                                     self.correction_radius_mm).astype(np.uint8))
        known = frozenset() if upload is None else frozenset({upload, mask_digest(mask.numpy())})
        self.sessions.store(object_key, *own_clicks, segmentation, known, mask.numpy() if keep_result else None)
        return mask, segmentation

    @staticmethod
    def object_key(volume: ModelVolume, name: str, client: Any, regions: list[RegionPrompt]) -> tuple:
        """The session key of the object ``name`` on ``volume`` for ``client`` with these region prompts."""
        return volume.source, name, client, tuple((r.kind, r.key) for r in regions)

    @staticmethod
    def _uploaded_label(data: dict[str, Any], shape: tuple[int, ...], what: str) -> np.ndarray | None:
        """An uploaded label volume (MONAI Label puts its temporary path under ``label``) as integers, if any. Any
        other ``label`` value is the object's name (3D Slicer sends it there), never a file to read."""
        path = data.get("label")
        if not isinstance(path, str) or not is_upload(path):
            return None
        try:
            label = LoadImage(image_only=True)(path)
        except Exception as e:
            raise UnreadableImage(f"Cannot read the uploaded {what}: {e}") from e
        label = np.asarray(label).squeeze()
        if tuple(label.shape) != tuple(shape):
            raise InvalidRequest(f"Uploaded {what} shape {list(label.shape)} does not match the image {list(shape)}")
        return np.round(label).astype(np.int64)
