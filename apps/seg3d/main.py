"""seg3d: a MONAI Label app serving an interactive 3D Segment-Anything model."""

from __future__ import annotations

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
from monailabel.datastore.dicom import DICOMWebDatastore  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402
from monailabel.interfaces.tasks.scoring import ScoringMethod  # noqa: E402
from monailabel.interfaces.tasks.strategy import Strategy  # noqa: E402
from monailabel.interfaces.tasks.train import TrainTask  # noqa: E402

from lib.activelearning.random import RecencyWeightedRandom  # noqa: E402
from lib.activelearning.uncertainty import UncertaintyStrategy  # noqa: E402
from lib.configs.protosam3d import ProtoSam3DConfig  # noqa: E402
from lib.configs.sam3d import Sam3DConfig  # noqa: E402
from lib.data.classes import (  # noqa: E402
    CLASSES_TXT,
    add_new_names,
    read_class_names,
    read_classes_txt,
    saved_label_names,
)
from lib.datastore import ValidatingDatastore, forget_remote_lists  # noqa: E402
from lib.dicomweb_datastore import ValidatingDICOMWebDatastore  # noqa: E402
from lib.engine.allocator import share_main_arena  # noqa: E402
from lib.engine.blas import single_threaded_blas  # noqa: E402
from lib.engine.runtime import Runtime  # noqa: E402
from lib.errors import InvalidRequest, NotFound  # noqa: E402
from lib.request_files import allowed_file, is_path_like  # noqa: E402
from lib.scoring.uncertainty import SCORE_KEY, Sam3DUncertaintyScoring  # noqa: E402
from lib.server_routes import harden_server_routes  # noqa: E402
from lib.settings import Settings  # noqa: E402
from lib.shutdown import install as stop_subprocesses_on_shutdown  # noqa: E402
from lib.temp_folder import use_own_temp_folder  # noqa: E402
from lib.trainers.auto_train import active_trainers, due_trainers  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_LABELS = {"white_matter": 1, "grey_matter": 2, "lateral_ventricles": 3}


def app_labels(studies: str, app_settings: Settings) -> dict[str, int]:
    """Label map ``{name: index}``: ``--conf labels`` (JSON object or comma list), the studies' ``classes.txt``, the
    indices saved labels name, or the sample data's classes; then any other class name saved labels use."""
    saved = [] if not os.path.isdir(studies) else saved_label_names(Path(studies))
    if app_settings.labels:
        base = dict(app_settings.labels)
    elif (Path(studies) / CLASSES_TXT).is_file():
        base = {name: index for index, name in sorted(read_classes_txt(Path(studies) / CLASSES_TXT).items())}
    elif saved:
        base = {name: index for index, name in read_class_names(Path(studies)).items()}
    else:
        base = dict(DEFAULT_LABELS)
    return add_new_names(base, [name for names in saved for _, name in sorted(names.items())])


class Seg3DApp(MONAILabelApp):
    """Interactive 3D SAM (``sam3d``), automatic ``protosam3d``, the adapter trainer, uncertainty scoring and the
    ``uncertainty`` next-sample strategy, on the datastore's images."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.model_dir = str(REPO_ROOT / "model")
        self.app_settings = Settings.from_conf(conf)  # every --conf key, typed; a bad value stops start-up here
        self.runtime = Runtime.from_settings(Path(self.model_dir), self.app_settings)
        self.label_map = app_labels(studies, self.app_settings)
        self.sam3d_config = Sam3DConfig()
        self.sam3d_config.init("sam3d", self.model_dir, conf, None, runtime=self.runtime, labels=self.label_map,
                               settings=self.app_settings)
        self.protosam3d_config = ProtoSam3DConfig()
        self.protosam3d_config.init("protosam3d", self.model_dir, conf, None, runtime=self.runtime,
                                    labels=self.label_map, datastore=lambda: self.datastore(),
                                    settings=self.app_settings)
        self.train_after_labels = self.app_settings.train_after_labels
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="seg3d",
            description="Interactive 3D Segment-Anything with adapters, prototypes and active learning",
            version=monailabel.__version__,
            # a list of names, as MONAI Label builds it itself: OHIF's panel fails on a {name: index} map
            labels=sorted(self.label_map, key=self.label_map.get),
        )
        harden_server_routes(threaded_infer=self.app_settings.threaded_infer)
        if "monailabel.app" in sys.modules:  # the server (not a training or scoring subprocess)
            stop_subprocesses_on_shutdown()
            use_own_temp_folder()  # nothing MONAI Label leaves there outlives the server
            share_main_arena()  # requests run on worker threads
            single_threaded_blas()  # its small matrices wait for OpenBLAS threads otherwise

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            datastore = super().init_datastore()  # as MONAI Label configures it (client, session, cache, filter)
            if isinstance(datastore, DICOMWebDatastore):
                return ValidatingDICOMWebDatastore.adopt(datastore)
            return datastore
        return ValidatingDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Refuse unknown image ids with a 404 naming the id (MONAI Label would pass an empty path on), and paths
        other than the studies folder's files, an upload or a session image with a 422."""
        if request.get("model") not in self._infers:
            raise NotFound(f"No model {request.get('model')!r}; this app serves {sorted(self._infers)}")
        image = request.get("image")
        store = datastore or self.datastore()
        if not isinstance(image, str) or not image:
            raise InvalidRequest("'image' must be an image id of the datastore")
        if is_path_like(image):
            sessions = self.sessions()
            roots = [self.studies if os.path.isdir(self.studies) else "", sessions.store_path if sessions else ""]
            if not allowed_file(image, roots):
                raise InvalidRequest(f"'image' must be an image id of the datastore, not a path: {image!r}")
        elif not store.get_image_uri(image):
            raise NotFound(f"Image not found: {image!r} is not in the datastore")
        return super().infer(request, datastore)

    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        """A 404 naming the strategies for an unknown one (MONAI Label answers 500)."""
        if request.get("strategy") not in self._strategies:
            raise NotFound(f"No strategy {request.get('strategy')!r}; this app has {sorted(self._strategies)}")
        return super().next_sample(request)

    def init_infers(self) -> dict[str, InferTask]:
        return {**self.sam3d_config.infer(), "protosam3d": self.protosam3d_config.infer()}

    def init_trainers(self) -> dict[str, TrainTask]:
        return {"sam3d": self.sam3d_config.trainer(), "segmentation": self.protosam3d_config.trainer()}

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        samples = self.app_settings.uncertainty_samples
        return {SCORE_KEY: Sam3DUncertaintyScoring(self.protosam3d_config.service, self.runtime.volumes, samples,
                                                   self.protosam3d_config.heads)}

    def init_strategies(self) -> dict[str, Strategy]:
        window = self.app_settings.next_sample_window_s
        return {"uncertainty": UncertaintyStrategy(window_s=window), "random": RecencyWeightedRandom()}

    def on_save_label(self, image_id: str, label_id: str) -> None:
        """Add the label's prototypes (seconds); queue each trainer of ``--conf auto_train`` once ``--conf
        train_after_labels N`` usable final labels are new to what it last published."""
        super().on_save_label(image_id, label_id)
        forget_remote_lists(self.datastore())
        try:
            self.protosam3d_config.service.sync()
        except Exception:  # the label is saved either way; protosam3d retries on its next request
            logger.exception("Updating prototypes after saving %s failed", image_id)
        if self.train_after_labels <= 0:
            return
        busy = active_trainers()
        published = {name: self.published_metadata(name) for name in self.app_settings.auto_train if name not in busy}
        for name, new in due_trainers(self.datastore(), published, self.train_after_labels).items():
            logger.info("%d final labels new to %s (%s): queueing its training", len(new), name, new)
            self.async_training(name, enqueue=True)

    def published_metadata(self, trainer: str) -> dict[str, Any] | None:
        """The metadata of the version a trainer's published files serve now (None before its first); the head's
        from the copy ``protosam3d`` keeps loaded."""
        if trainer == "segmentation":
            head = self.protosam3d_config.heads.load()
            return head.metadata if head else None
        registry = self.runtime.models.registry()
        version = registry.current() if registry else None
        return registry.read(version)[1] if version else None
