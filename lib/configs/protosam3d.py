"""Task config for ``protosam3d``: prototypes of the saved labels, kept next to the model, and the automatic infer."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from lib.engine.runtime import Runtime
from lib.infers.protosam3d import ProtoSam3DInfer
from lib.prototypes.service import PrototypeService


class ProtoSam3DConfig(TaskConfig):
    """Needs ``runtime`` (shared with ``sam3d``), ``labels`` and ``datastore`` (a callable returning the app's)."""

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

    def infer(self) -> InferTask | dict[str, InferTask]:
        return ProtoSam3DInfer(self.runtime.predictor, self.runtime.volumes, self.service)

    def trainer(self) -> TrainTask | None:
        return None  # prototypes need no training run; the adapters are trained by sam3d's trainer
