"""Task config for ``sam3d``: the interactive 3D SAM and the trainer of its adapters."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from lib.engine.runtime import Runtime
from lib.infers.sam3d import Sam3DInfer
from lib.infers.sam3d_scribbles import Sam3DScribblesInfer
from lib.settings import Settings
from lib.trainers.sam3d_adapters import Sam3DAdapterTrain


class Sam3DConfig(TaskConfig):
    """Registers the interactive ``sam3d`` and ``sam3d_scribbles`` infers on the app's shared :class:`Runtime`
    (passed as ``runtime``); the trainer's defaults come from ``settings`` (the app's parsed ``--conf``, else parsed
    here)."""

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.runtime: Runtime = kwargs["runtime"]
        self.labels = kwargs["labels"]
        self.settings: Settings = kwargs.get("settings") or Settings.from_conf(conf)

    def infer(self) -> InferTask | dict[str, InferTask]:
        """``sam3d`` (clicks, box, lasso, previous mask) and ``sam3d_scribbles`` (Slicer's scribbles)."""
        runtime = self.runtime
        return {
            "sam3d": Sam3DInfer(predictor=runtime.predictor, volumes=runtime.volumes, labels=self.labels,
                                heads=runtime.heads, correction_radius_mm=self.settings.correction_radius_mm),
            "sam3d_scribbles": Sam3DScribblesInfer(predictor=runtime.predictor, volumes=runtime.volumes,
                                                   labels=self.labels),
        }

    def trainer(self) -> TrainTask | None:
        return Sam3DAdapterTrain(
            model_dir=str(self.runtime.state_dir / "train"),
            models=self.runtime.models,
            labels=self.labels,
            spacing=self.runtime.volumes.spacing,
            defaults=self.settings.train.options(),
        )
