"""Objects shared by every infer task of one app: model store, model-space volume cache, predictor and the
published segmentation heads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lib.configs.checkpoints import choose_checkpoint
from lib.engine.model_store import ModelStore, default_device
from lib.engine.predictor import InteractivePredictor
from lib.segmentation.head import HeadStore
from lib.settings import MODEL_SPACING_MM, Settings
from lib.transforms.preprocess import VolumeCache

logger = logging.getLogger(__name__)

__all__ = ["MODEL_SPACING_MM", "Runtime"]  # MODEL_SPACING_MM lives in lib.settings; kept importable from here


@dataclass
class Runtime:
    models: ModelStore
    volumes: VolumeCache
    predictor: InteractivePredictor
    state_dir: Path  # what the app writes: adapters/, segmentation/ (heads), prototypes/ and training runs
    heads: HeadStore

    @classmethod
    def from_settings(cls, model_dir: Path, settings: Settings) -> Runtime:
        """Build from the app's settings; nothing is loaded until the first request."""
        choice = choose_checkpoint(model_dir, settings)
        logger.info("Serving %s (%s)", choice.checkpoint, choice.reason)
        state_dir = settings.state_dir or model_dir
        models = ModelStore(
            choice.checkpoint,
            choice.encoder_checkpoint,
            device=settings.device or default_device(),
            adapter_root=state_dir / "adapters",
            keep_adapters=settings.keep_adapters,
            adapter_version=settings.adapter_version,
        )
        volumes = VolumeCache(spacing=settings.spacing, max_bytes=int(settings.volume_cache_mb * (1 << 20)))
        predictor = InteractivePredictor(models, embedding_cache_bytes=int(settings.embedding_cache_mb * (1 << 20)),
                                         autozoom=settings.autozoom)
        heads = HeadStore(state_dir / "segmentation", keep=settings.keep_adapters)
        return cls(models=models, volumes=volumes, predictor=predictor, state_dir=state_dir, heads=heads)
