"""Objects shared by every infer task of one app: model store, model-space volume cache and predictor."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lib.configs.checkpoints import choose_checkpoint
from lib.engine.model_store import ModelStore, default_device
from lib.engine.predictor import InteractivePredictor
from lib.transforms.preprocess import VolumeCache

logger = logging.getLogger(__name__)

MODEL_SPACING_MM = 1.5


@dataclass
class Runtime:
    models: ModelStore
    volumes: VolumeCache
    predictor: InteractivePredictor
    state_dir: Path  # what the app writes: published adapters (adapters/) and training runs (train/)

    @classmethod
    def from_conf(cls, model_dir: Path, conf: dict[str, str]) -> Runtime:
        """Build from ``--conf`` strings; nothing is loaded until the first request."""
        choice = choose_checkpoint(model_dir, conf)
        logger.info("Serving %s (%s)", choice.checkpoint, choice.reason)
        device = conf.get("device") or default_device()
        state_dir = Path(conf.get("state_dir") or model_dir)
        pinned = conf.get("adapter_version", "latest")
        models = ModelStore(
            choice.checkpoint,
            choice.encoder_checkpoint,
            device=device,
            adapter_root=state_dir / "adapters",
            keep_adapters=int(conf.get("keep_adapters", 5)),
            adapter_version=None if pinned == "latest" else int(pinned),
        )
        volumes = VolumeCache(
            spacing=float(conf.get("spacing", MODEL_SPACING_MM)),
            max_bytes=int(float(conf.get("volume_cache_mb", 1024)) * (1 << 20)),
        )
        predictor = InteractivePredictor(
            models, embedding_cache_bytes=int(float(conf.get("embedding_cache_mb", 512)) * (1 << 20))
        )
        return cls(models=models, volumes=volumes, predictor=predictor, state_dir=state_dir)
