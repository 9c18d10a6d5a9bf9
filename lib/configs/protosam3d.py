"""Task config for ``protosam3d``: prototypes of the saved labels, kept next to the model, the segmentation heads
trained on them, the automatic infer and the ``segmentation`` trainer."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from lib.engine.runtime import Runtime
from lib.infers.protosam3d import ProtoSam3DInfer
from lib.prototypes.service import PrototypeService
from lib.segmentation.head import HeadStore
from lib.settings import Settings
from lib.trainers.segmentation import SegmentationTrain


class ProtoSam3DConfig(TaskConfig):
    """Needs ``runtime`` (shared with ``sam3d``), ``labels`` and ``datastore`` (a callable returning the app's);
    ``settings`` (the app's parsed ``--conf``, else parsed here) gives the trainer's defaults."""

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        runtime: Runtime = kwargs["runtime"]
        self.runtime = runtime
        self.service = PrototypeService(
            runtime.state_dir / "prototypes" / "bank.pt",
            runtime.predictor,
            runtime.volumes,
            datastore=kwargs["datastore"],
            app_labels=kwargs["labels"],
        )
        self.heads: HeadStore = runtime.heads
        self.settings: Settings = kwargs.get("settings") or Settings.from_conf(conf)

    def infer(self) -> InferTask | dict[str, InferTask]:
        return ProtoSam3DInfer(self.runtime.predictor, self.runtime.volumes, self.service, self.heads)

    def trainer(self) -> TrainTask | None:
        """The SegResNet head (``segmentation``); prototypes need no training run."""
        return SegmentationTrain(str(self.runtime.state_dir / "train_segmentation"), self.heads, self.service,
                                 self.runtime.volumes.spacing, self.settings.segmentation.options())
