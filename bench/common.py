"""Shared benchmark plumbing: arguments, studies data, machine description and the JSON summary."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from lib.data.classes import read_class_names  # noqa: E402
from lib.shutdown import stop_children  # noqa: E402
from lib.training.studies import labeled_pairs  # noqa: E402

_WORK: tempfile.TemporaryDirectory | None = None  # every work folder of this process, removed at exit


def work_folder(prefix: str = "seg3d-") -> Path:
    """A new folder for one run's studies, state or files (a bench's, or a test client's downloads), removed with
    the others when the process exits (they hold copies of the volumes and results, up to hundreds of MB)."""
    global _WORK
    if _WORK is None:
        _WORK = tempfile.TemporaryDirectory(prefix="seg3d-work-")
        _remove_on_sigterm()
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_WORK.name))


def _remove_on_sigterm() -> None:
    """SIGTERM (``kill``, a job's time limit) ends a process without its exit hooks or context managers: first stop
    its child processes (a bench's or a test's server) and remove the work folders, then let the signal do what it
    did before (a handler installed earlier, or the default end). Only the main thread may set handlers; an ignored
    SIGTERM stays so."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous == signal.SIG_IGN:
        return

    def handler(signum: int, frame: Any) -> None:
        stop_children()
        if _WORK is not None:
            _WORK.cleanup()
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)


def parser(description: str, default_data: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", type=Path, default=REPO_ROOT / default_data,
                   help="MONAI Label studies folder with labels/final (class names from label_info or classes.txt)")
    p.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "model" / "starter.pt")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON summary here")
    p.add_argument("--threads", type=int, default=2)
    return p


def studies_with_classes(data: Path) -> tuple[list[tuple[Path, Path]], dict[int, str]]:
    pairs = labeled_pairs(data)
    if not pairs:
        raise SystemExit(f"{data} has no images with labels/final")
    classes = read_class_names(data)
    if not classes:
        raise SystemExit(f"{data}: no class names (label_info or classes.txt)")
    return pairs, classes


def app_on_studies(root: Path, pairs: list[tuple[Path, Path]], images: list[Path], classes: dict[int, str],
                   checkpoint: Path, conf: dict[str, str] | None = None) -> Any:
    """The seg3d app on a new studies folder under ``root``: ``pairs`` (image, final label) and unlabelled
    ``images``, the classes in ``classes.txt``, its state in ``root/state``; no server (scores are not updated
    on their own), and no watcher on the folder (at exit it rewrote the datastore's JSON while the folder was
    being removed)."""
    os.environ["MONAI_LABEL_AUTO_UPDATE_SCORING"] = "false"
    from monailabel.config import settings  # read once, maybe before the line above: set it there too

    from apps.seg3d.main import Seg3DApp  # the app only when a run asks for it

    settings.MONAI_LABEL_AUTO_UPDATE_SCORING = False
    settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD = False

    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    (studies / "classes.txt").write_text("".join(f"{index} {name}\n" for index, name in sorted(classes.items())))
    for image, label in pairs:
        shutil.copy(image, studies / image.name)
        shutil.copy(label, studies / "labels" / "final" / image.name)
    for image in images:
        shutil.copy(image, studies / image.name)
    return Seg3DApp(str(REPO_ROOT / "apps" / "seg3d"), str(studies),
                    {"state_dir": str(root / "state"), "checkpoint": str(checkpoint), **(conf or {})})


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def app_result(app: Any, request: dict[str, Any], dtype: type = np.int16) -> tuple[np.ndarray, dict[str, Any]]:
    """``app.infer(request)``'s result volume and its JSON; MONAI Label writes the volume to a temporary file that
    nothing removes, so it is read and deleted here."""
    result = app.infer(request)
    path = Path(result["file"])
    try:
        return np.asarray(nib.load(str(path)).dataobj, dtype=dtype), result["params"]
    finally:
        path.unlink(missing_ok=True)


def emit(summary: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(summary, indent=2, default=_jsonable)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value))
