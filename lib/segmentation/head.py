"""Published segmentation heads: SegResNet weights trained on the saved labels, with the record of which classes
they serve (``model/segmentation/v0001.pt`` and on, :class:`lib.engine.versioned_files.VersionedFiles`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lib.engine.versioned_files import VersionedFiles, atomic_torch_save
from lib.segmentation.resample import to_original_argmax
from lib.segmentation.segresnet import build_network, predict_model_space
from lib.segmentation.sources import NETWORK
from lib.transforms.preprocess import ModelVolume

FORMAT = "seg3d-segmentation-head-1"


@dataclass
class SegmentationHead:
    """One published version: the network and its metadata (``channels`` ``{class: output channel}``, ``sources``
    ``{class: "segresnet" | "prototypes"}``, ``infer_window``, the loss's ``class_weights`` per channel, the
    validation that chose the sources, the run)."""

    network: torch.nn.Module
    metadata: dict[str, Any]

    @property
    def version(self) -> int:
        return int(self.metadata["version"])

    def served_classes(self) -> list[str]:
        """The classes validation gave to the network."""
        return sorted(name for name, source in self.metadata.get("sources", {}).items() if source == NETWORK)

    def probabilities(self, volume: ModelVolume) -> torch.Tensor:
        """Class probabilities in model space, (channels, X, Y, Z)."""
        return predict_model_space(self.network, volume.image, int(self.metadata["infer_window"]))

    def mirror_averaged(self, volume: ModelVolume, probabilities: torch.Tensor) -> torch.Tensor:
        """The mean of ``probabilities`` (:meth:`probabilities` of ``volume``) and the network's probabilities on the
        image mirrored left-right (model-space axis 0, the flip training augments with), mirrored back: test-time
        augmentation, whose two passes disagree where the single pass is wrongly sure."""
        window = int(self.metadata["infer_window"])
        mirrored = predict_model_space(self.network, torch.flip(volume.image, dims=[1]), window)
        return (probabilities + torch.flip(mirrored, dims=[1])) / 2

    def prior_corrected(self, probabilities: torch.Tensor) -> torch.Tensor:
        """``probabilities`` with the class-weighted loss's prior taken out: divided by each channel's
        ``class_weights`` and renormalised (weighted cross-entropy learns probabilities proportional to weight
        times the true ones, which inflates the up-weighted classes). Unchanged for a head without weights."""
        weights = self.metadata.get("class_weights")
        if not weights:
            return probabilities
        shape = (len(weights),) + (1,) * (probabilities.dim() - 1)
        unweighted = probabilities / torch.as_tensor(weights, dtype=probabilities.dtype).reshape(shape)
        return unweighted / unweighted.sum(0, keepdim=True)

    @staticmethod
    def to_labels(volume: ModelVolume, probabilities: torch.Tensor) -> torch.Tensor:
        """Output channels (arg-max of :meth:`probabilities`, interpolated onto the stored grid of ``volume``),
        uint8."""
        return to_original_argmax(volume, probabilities)

    def segment(self, volume: ModelVolume) -> torch.Tensor:
        """Output channels (arg-max) on the stored grid of ``volume``, uint8."""
        return self.to_labels(volume, self.probabilities(volume))


class HeadStore(VersionedFiles):
    """The published heads of one state folder; :meth:`load` keeps the current one in memory."""

    def __init__(self, folder: Path, keep: int = 5):
        super().__init__(folder, keep)
        self._lock = threading.Lock()
        self._loaded: tuple[tuple[int, float], SegmentationHead] | None = None

    def write(self, path: Path, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        atomic_torch_save(path, {"format": FORMAT, "metadata": metadata, "state_dict": state})

    def read(self, version: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        content = torch.load(self.path(version), map_location="cpu", weights_only=False)
        if not isinstance(content, dict) or content.get("format") != FORMAT:
            raise ValueError(f"{self.path(version)} is not a seg3d segmentation head")
        return content["state_dict"], content["metadata"]

    def load(self) -> SegmentationHead | None:
        """The newest published head (None before the first), read again only when a newer one appears."""
        version = self.current()
        if version is None:
            return None
        key = (version, self.path(version).stat().st_mtime)
        with self._lock:
            if self._loaded is None or self._loaded[0] != key:
                state, metadata = self.read(version)
                channels = max(metadata["channels"].values()) + 1
                network = build_network(channels, int(metadata["init_filters"]))
                network.load_state_dict(state)
                self._loaded = (key, SegmentationHead(network.eval(), metadata))
            return self._loaded[1]
