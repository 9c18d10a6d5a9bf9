"""Every ``--conf`` key the app reads, typed, with its default and a one-line doc, parsed in one place.

``Settings.from_conf(conf)`` turns MONAI Label's ``--conf KEY VALUE`` strings into a frozen :class:`Settings`; a value
it does not understand raises :class:`SettingsError` naming the key and saying why, so a bad value stops start-up.
``python -m lib.settings`` prints the README's table of keys (a test keeps the two equal). Light on purpose (no
torch): training and scoring subprocesses rebuild the app, and so parse the settings, on every run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MODEL_SPACING_MM = 1.5  # the model's voxel size: images are resampled to it before the encoder
TRAIN_PREFIX = "train_"  # ``--conf train_<option> value`` sets a default of the sam3d trainer's request options
SEGMENTATION_PREFIX = "segmentation_"  # ... and ``--conf segmentation_<option> value`` of the segmentation trainer's
TRAINERS = ("sam3d", "segmentation")  # the app's trainers (``POST /train/<name>``)
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


class SettingsError(ValueError):
    """A ``--conf`` value the app cannot use; the message names the key and says why."""


def parse_bool(key: str, text: str) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``, any case); anything else is an error."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingsError(f"--conf {key} {text!r}: expected true or false (or 1/0, yes/no, on/off)")


def parse_int(key: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise SettingsError(f"--conf {key} {text!r}: expected a whole number") from None


def parse_float(key: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise SettingsError(f"--conf {key} {text!r}: expected a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"--conf {key} {text!r}: expected a finite number")
    return value


def parse_str(key: str, text: str) -> str:
    return text


def parse_optional_str(key: str, text: str) -> str | None:
    return text.strip() or None


def parse_path(key: str, text: str) -> Path | None:
    return Path(text.strip()) if text.strip() else None


def parse_adapter_version(key: str, text: str) -> int | None:
    """``latest`` (None) or a version number (``0``: the bare base model)."""
    if text.strip().lower() == "latest":
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise SettingsError(f"--conf {key} {text!r}: expected 'latest' or a version number (0: no adapters)") from None


def parse_autozoom(key: str, text: str) -> bool | None:
    """``auto`` (None: on for models trained across zooms, the starter; off for official checkpoints) or a bool."""
    return None if text.strip().lower() == "auto" else parse_bool(key, text)


def parse_labels(key: str, text: str) -> dict[str, int] | None:
    """A JSON object ``{"name": index}`` or a comma list of names (indices 1, 2, ... in order); empty: None."""
    if not text.strip():
        return None
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
            labels = {str(name): int(index) for name, index in raw.items()}
        except (ValueError, TypeError, AttributeError) as e:
            raise SettingsError(f"--conf {key} {text!r}: expected a JSON object of name: index ({e})") from None
        if any(index <= 0 for index in labels.values()):
            raise SettingsError(f"--conf {key} {text!r}: label indices must be 1 or more (0 is the background)")
        return labels
    return {name.strip(): i for i, name in enumerate(text.split(","), start=1) if name.strip()} or None


def parse_trainers(key: str, text: str) -> tuple[str, ...]:
    """A comma list of the app's trainer names (:data:`TRAINERS`); empty: none."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(names) - set(TRAINERS))
    if unknown:
        raise SettingsError(f"--conf {key} {text!r}: unknown trainers {unknown}; the app has {list(TRAINERS)}")
    return tuple(dict.fromkeys(names))


PARSERS: dict[type, Callable[[str, str], Any]] = {bool: parse_bool, int: parse_int, float: parse_float, str: parse_str}


def setting(default: Any, doc: str, parse: Callable[[str, str], Any] | None = None, minimum: float | None = None,
            shown: str | None = None) -> Any:
    """A settings field: ``doc`` is its one-line description, ``parse`` turns the ``--conf`` string into its value
    (by default chosen from the default's type), ``minimum`` bounds numbers, ``shown`` is the README's default when
    it is not the value itself."""
    parser = parse or PARSERS[type(default)]
    return field(default=default, metadata={"doc": doc, "parse": parser, "minimum": minimum, "shown": shown})


@dataclass(frozen=True)
class RunSettings:
    """Request options every trainer of the app takes (MONAI Label's own)."""

    dataset: str = setting("CacheDataset", "MONAI Label's dataset class for the run")
    dataloader: str = setting("ThreadDataLoader", "MONAI Label's data loader class for the run")
    tracking: str = setting("None", "MONAI Label's experiment tracking (`None`: off; mlflow is not installed)")

    def options(self) -> dict[str, Any]:
        """``{option: value}``, the trainer's default request."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainSettings(RunSettings):
    """Defaults of the ``sam3d`` trainer's request options; ``--conf train_<option> value`` changes one."""

    max_epochs: int = setting(100, "most epochs of one run", minimum=1)
    max_minutes: float = setting(8.0, "most minutes of one run", minimum=0)
    val_split: float = setting(0.2, "share of the labels held out for validation (the same ones each run)", minimum=0)
    max_clicks: int = setting(5, "most simulated clicks per crop", minimum=1)
    crops_per_volume: int = setting(4, "random crops per labelled volume and epoch", minimum=1)
    lr: float = setting(5e-4, "learning rate", minimum=0)
    bottleneck: int = setting(32, "adapter width (down-projection size)", minimum=1)
    train_norms: bool = setting(True, "train the encoder's norm layers too")
    train_prompt_encoder: bool = setting(True, "train the prompt encoder too")
    train_mask_decoder: bool = setting(True, "train the mask decoder too")
    continue_from_published: bool = setting(
        True, "start from the published adapters (else from new, zero-initialised ones)")
    keep_known_classes: bool = setting(
        True, "publish a fine-tune only if no validated class loses more than 0.02 Dice at 1 or 5 clicks")
    seed: int = setting(0, "random seed of crops, clicks and the validation split")


@dataclass(frozen=True)
class SegmentationTrainSettings(RunSettings):
    """Defaults of the ``segmentation`` trainer's request options (the SegResNet head of ``protosam3d``);
    ``--conf segmentation_<option> value`` changes one."""

    max_epochs: int = setting(10000, "most epochs of one head run (one epoch: one crop batch per label)", minimum=1)
    max_minutes: float = setting(
        15.0, "most minutes of one head run (2 CPU cores: 800-1000 steps, grey and white matter "
        "0.89-0.92 on held-out volumes against 0.85-0.87 after 5 minutes)", minimum=0)
    val_split: float = setting(
        0.2, "share of the labels held out to choose each class's source (the same ones each run)", minimum=0)
    init_filters: int = setting(8, "SegResNet width (a multiple of 8)", minimum=8)
    crop: int = setting(64, "training crop edge, model-space voxels", minimum=16)
    infer_window: int = setting(
        96, "sliding-window edge at inference, model-space voxels (96 against 64: faster, and grey matter 0.79 "
        "against 0.67 on two pool volumes)", minimum=16)
    crops_per_step: int = setting(2, "class-balanced crops per optimiser step", minimum=1)
    lr: float = setting(2e-3, "initial learning rate (Adam, cosine-decayed over the run)", minimum=0)
    seed: int = setting(0, "random seed of weights, crops and the validation split")


PREFIXED_GROUPS: dict[str, tuple[str, type]] = {
    TRAIN_PREFIX: ("train", TrainSettings),
    SEGMENTATION_PREFIX: ("segmentation", SegmentationTrainSettings),
}


@dataclass(frozen=True)
class Settings:
    """The app's ``--conf`` keys (``train_<option>`` keys live in :attr:`train`, ``segmentation_<option>`` keys in
    :attr:`segmentation`)."""

    checkpoint: Path | None = setting(
        None, "checkpoint file to serve", parse_path, shown="official files in `model/`, else `model/starter.pt`")
    encoder_checkpoint: Path | None = setting(
        None, "FastSAM3D student encoder file to use with `checkpoint`", parse_path, shown="none")
    device: str | None = setting(None, "torch device", parse_optional_str, shown="`cuda` if available, else `cpu`")
    state_dir: Path | None = setting(
        None, "where the app writes adapters, training runs and prototypes", parse_path, shown="`model/`")
    adapter_version: int | None = setting(
        None, "adapter version to serve: `latest` or N (0: the bare base model)", parse_adapter_version, minimum=0,
        shown="`latest`")
    keep_adapters: int = setting(5, "published adapter versions kept on disk", minimum=1)
    spacing: float = setting(MODEL_SPACING_MM, "model voxel size in mm", minimum=1e-3)
    autozoom: bool | None = setting(
        None, "start new objects in a zoomed-in crop, zooming out while the mask reaches its faces: `auto` (on for "
        "objects a starter's mask refiner serves; off for official checkpoints and the decoder's own classes), true, "
        "false",
        parse_autozoom, shown="`auto`")
    volume_cache_mb: float = setting(1024.0, "memory for model-space volumes", minimum=0)
    embedding_cache_mb: float = setting(512.0, "memory for image embeddings", minimum=0)
    labels: dict[str, int] | None = setting(
        None, "label map: JSON `{name: index}` or a comma list of names", parse_labels,
        shown="the studies' `classes.txt`, else saved labels' names, else the sample classes")
    train_after_labels: int = setting(
        0, "start each trainer of `auto_train` on its own once N usable final labels are new to what it last "
        "published (0: never)", minimum=0)
    auto_train: tuple[str, ...] = setting(
        TRAINERS, "the trainers `train_after_labels` starts (comma list)", parse_trainers, shown="`sam3d,segmentation`")
    correction_radius_mm: float = setting(
        15.0, "a click on an uploaded label of a class the segmentation head serves changes only the region it "
        "points at, within this radius (0: the model's whole answer replaces the label)", minimum=0)
    threaded_infer: bool = setting(True, "serve /infer from the thread pool (false: MONAI Label's event loop)")
    uncertainty_samples: int = setting(4, "jittered predictions per `sam3d_uncertainty` score", minimum=1)
    next_sample_window_s: float = setting(
        600.0, "seconds a volume handed out by next sample is not offered to another client", minimum=0)
    train: TrainSettings = field(default_factory=TrainSettings)
    segmentation: SegmentationTrainSettings = field(default_factory=SegmentationTrainSettings)

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any] | None) -> Settings:
        """Parse ``--conf`` strings; missing keys keep their defaults, unknown keys are logged and ignored (MONAI
        Label reads a few of its own), a value that does not parse raises :class:`SettingsError`."""
        conf = dict(conf or {})
        values = {f.name: _parse(f, f.name, conf.pop(f.name)) for f in _fields(cls) if f.name in conf}
        groups = {
            attribute: klass(**{f.name: _parse(f, prefix + f.name, conf.pop(prefix + f.name))
                                for f in _fields(klass) if prefix + f.name in conf})
            for prefix, (attribute, klass) in PREFIXED_GROUPS.items()
        }
        if conf:
            logger.warning("--conf keys seg3d does not read (passed on to MONAI Label): %s", sorted(conf))
        return cls(**values, **groups)

    @classmethod
    def keys(cls) -> list[str]:
        """Every ``--conf`` key the app reads."""
        return [f.name for f in _fields(cls)] + [
            prefix + f.name for prefix, (_, klass) in PREFIXED_GROUPS.items() for f in _fields(klass)]

    @classmethod
    def markdown_table(cls) -> str:
        """The README's table of ``--conf`` keys."""
        rows = ["| key | default | meaning |", "|---|---|---|"]
        for prefix, klass in (("", cls), *((p, k) for p, (_, k) in PREFIXED_GROUPS.items())):
            for f in _fields(klass):
                shown = f.metadata["shown"] or f"`{_show(f.default)}`"
                rows.append(f"| `{prefix}{f.name}` | {shown} | {f.metadata['doc']} |")
        return "\n".join(rows)


def _fields(klass: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(klass) if "doc" in f.metadata]


def _parse(f: dataclasses.Field, key: str, value: Any) -> Any:
    parsed = f.metadata["parse"](key, value if isinstance(value, str) else str(value))
    minimum = f.metadata["minimum"]
    if minimum is not None and parsed is not None and parsed < minimum:
        raise SettingsError(f"--conf {key} {value!r}: must be at least {minimum:g}")
    return parsed


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    print(Settings.markdown_table())
