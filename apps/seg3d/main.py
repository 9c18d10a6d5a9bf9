"""seg3d: a MONAI Label app serving an interactive 3D Segment-Anything model."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import monailabel  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402

from lib.configs.sam3d import Sam3DConfig  # noqa: E402
from lib.data.classes import read_class_names  # noqa: E402
from lib.datastore import ValidatingDatastore  # noqa: E402
from lib.engine.runtime import Runtime  # noqa: E402
from lib.errors import NotFound  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_LABELS = {"white_matter": 1, "grey_matter": 2, "lateral_ventricles": 3}


def app_labels(studies: str, conf: dict[str, str]) -> dict[str, int]:
    """Label map ``{name: index}``: ``--conf labels`` (JSON object or comma list), the studies' class names, or the
    sample data's classes."""
    if conf.get("labels"):
        text = conf["labels"]
        if text.lstrip().startswith("{"):
            return {str(k): int(v) for k, v in json.loads(text).items()}
        return {name.strip(): i for i, name in enumerate(text.split(","), start=1) if name.strip()}
    if os.path.isdir(studies):
        names = read_class_names(Path(studies))
        if names:
            return {name: index for index, name in sorted(names.items())}
    return dict(DEFAULT_LABELS)


class Seg3DApp(MONAILabelApp):
    """Interactive 3D SAM (``sam3d``) on the datastore's images."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.model_dir = str(REPO_ROOT / "model")
        self.runtime = Runtime.from_conf(Path(self.model_dir), conf)
        self.label_map = app_labels(studies, conf)
        self.sam3d_config = Sam3DConfig()
        self.sam3d_config.init("sam3d", self.model_dir, conf, None, runtime=self.runtime, labels=self.label_map)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="seg3d",
            description="Interactive 3D Segment-Anything with adapters, prototypes and active learning",
            version=monailabel.__version__,
            labels=self.label_map,
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return ValidatingDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Refuse unknown image ids with a 404 naming the id (MONAI Label would pass an empty path on)."""
        image = request.get("image")
        store = datastore or self.datastore()
        if isinstance(image, str) and not os.path.exists(image) and not store.get_image_uri(image):
            raise NotFound(f"Image not found: {image!r} is not in the datastore")
        return super().infer(request, datastore)

    def init_infers(self) -> dict[str, InferTask]:
        return {"sam3d": self.sam3d_config.infer()}
