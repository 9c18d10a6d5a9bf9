"""What seg3d's infer tasks share: the app's predictor and volume cache, model info, and the result writer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.writer import Writer

from lib.engine.predictor import InteractivePredictor
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
        """NIfTI results through nibabel (fast, and no ITK start-up on the first click); other formats as MONAI
        Label writes them."""
        ext = data.get("result_extension") or ".nii.gz"
        if ext in (".nii", ".nii.gz"):
            data["result_extension"] = ext
            return Writer(label=self.output_label_key, json=self.output_json_key, nibabel=True)(data)
        return super().writer(data, extension, dtype)
