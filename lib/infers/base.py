"""What seg3d's infer tasks share: the app's predictor and volume cache, model info, and the result writer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from monai.data import MetaTensor
from monailabel.tasks.infer.basic_infer import BasicInferTask

from lib.engine.predictor import InteractivePredictor
from lib.infers.result_file import WRITTEN_HERE, result_dtype, write_result
from lib.settings import TRUE_WORDS
from lib.transforms.preprocess import LoadModelVolumed, VolumeCache


class ModelSpaceInferTask(BasicInferTask):
    """A ``BasicInferTask`` whose input is the cached model-space volume and whose model is the shared predictor's."""

    def __init__(self, predictor: InteractivePredictor, volumes: VolumeCache, labels: dict[str, int], type: str,
                 description: str):
        super().__init__(
            path=None,
            network=None,
            type=type,
            labels=labels,
            dimension=3,
            description=description,
            config={"cache_transforms": False},
        )
        self.predictor = predictor
        self.volumes = volumes

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["model_version"] = self.predictor.models.current_version()
        info["model"] = self.predictor.models.info()
        return info

    def is_valid(self) -> bool:
        return all(p.exists() for p in self.predictor.models.files())

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return [LoadModelVolumed(self.volumes)]

    def post_transforms(self, data=None) -> Sequence[Callable]:
        return []

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[Any, Any]:
        """NIfTI and NRRD results written directly (:mod:`lib.infers.result_file`: no ITK copies, and MONAI's NIfTI
        writer fails on axis-permuting affines); other formats as MONAI Label writes them."""
        ext = data.get("result_extension") or ".nii.gz"
        if ext not in WRITTEN_HERE:
            return super().writer(data, extension, dtype)
        label: MetaTensor = data[self.output_label_key]
        # MetaTensor.array would make a C-ordered copy; the tensor's own numpy view keeps the mask's memory order
        array = np.asarray(label.as_tensor().cpu().numpy(), dtype=result_dtype(data.get("result_dtype")))
        compress = str(data.get("result_compress", False)).strip().lower() in TRUE_WORDS
        return write_result(array, label.affine, ext, compress), data.get(self.output_json_key, {})
