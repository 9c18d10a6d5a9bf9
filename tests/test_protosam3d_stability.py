"""``protosam3d`` gives the same result whatever the CPU's float rounding: one torch thread, oneDNN off and
PyTorch's plain (non-vectorised) CPU kernels, as another CPU rounds differently, against two threads with oneDNN
and the vectorised kernels. Before prototypes and prompts were made robust, the plain kernels alone moved white
matter Dice from 0.05 to 0.07 and grey matter from 0.58 to 0.62 here (and 0.48 to 0.39 on an Intel CI machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from lib.data.build_sample import ensure_sample
from lib.engine.model_store import ModelStore
from lib.engine.predictor import InteractivePredictor
from lib.engine.runtime import MODEL_SPACING_MM
from lib.prompts.simulation import dice
from lib.prototypes.auto import segment_automatically
from lib.prototypes.bank import image_entry
from lib.transforms.preprocess import load_model_volume

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "data" / "sample"
PROTOTYPE_VOLUMES = ("subj_003", "subj_004")
TARGET = "subj_006"
CLASSES = {"white_matter": 1, "grey_matter": 2}
MAX_DIFFERENCE = 0.02  # per-class Dice, as the issue on CPU-dependent results asks


def automatic_dice(threads: int, mkldnn: bool) -> dict[str, float]:
    """Prototypes from two labelled volumes, automatic segmentation of a third, Dice per class."""
    previous = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mkldnn
    try:
        predictor = InteractivePredictor(ModelStore(REPO_ROOT / "model" / "starter.pt"))
        entries = []
        for name in PROTOTYPE_VOLUMES:
            volume = load_model_volume(str(SAMPLE / "studies_gt" / f"{name}.nii.gz"), MODEL_SPACING_MM)
            # the ground truth of a pool volume stands in for its saved label
            entries.append(image_entry(predictor, volume, str(SAMPLE / "studies_gt" / f"{name}.nii.gz"),
                                       CLASSES, 0, MODEL_SPACING_MM))
        per_class = {n: torch.cat([e.classes[n] for e in entries]) for n in CLASSES}
        background = torch.cat([e.background for e in entries])
        volume = load_model_volume(str(SAMPLE / "studies" / f"{TARGET}.nii.gz"), MODEL_SPACING_MM)
        result = segment_automatically(predictor, volume, per_class, background, CLASSES)
        truth = np.asarray(nib.load(SAMPLE / "studies_gt" / f"{TARGET}.nii.gz").dataobj)
        label = result.label.numpy()
        return {n: dice(label == v, truth == v) for n, v in CLASSES.items()}
    finally:
        torch.set_num_threads(previous[0])
        torch.backends.mkldnn.enabled = previous[1]


@pytest.fixture(scope="module")
def sample() -> Path:
    return ensure_sample(SAMPLE)


def test_automatic_segmentation_does_not_depend_on_threads_or_onednn(sample):
    code = ("import json; from tests.test_protosam3d_stability import automatic_dice; "
            "print('DICE', json.dumps(automatic_dice(threads=1, mkldnn=False)))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=600, check=True)
    single = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("DICE"))[5:])
    double = automatic_dice(threads=2, mkldnn=True)
    assert all(abs(single[n] - double[n]) <= MAX_DIFFERENCE for n in CLASSES), (single, double)
