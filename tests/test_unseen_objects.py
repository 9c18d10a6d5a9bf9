"""The unseen-object evaluation set: its kinds were never pretraining targets, and its lesions are what they claim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lib.data.lesions import LESION_KINDS, RIM_MM, VOLUME_ML, paint_lesions
from lib.data.unseen import unseen_kinds

REPO_ROOT = Path(__file__).resolve().parents[1]
WHITE, GREY = 0.8, 0.5


def test_no_evaluation_kind_was_a_labelled_training_target():
    record = json.loads((REPO_ROOT / "model" / "starter.json").read_text())
    kinds = unseen_kinds()
    assert len(kinds) >= 8 and "lateral_ventricles" in kinds and len(set(kinds)) == len(kinds)
    trained = set(record["anatomy_targets"])
    assert trained, "the record lists the labelled targets pretraining used"
    assert not trained & set(kinds)
    assert "lateral_ventricles" in record["excluded"]["anatomy_classes"]


@pytest.fixture(scope="module")
def painted() -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Lesions in a 120 mm cube of 'white matter' inside a grey shell, on a 1 mm grid."""
    t1 = np.full((140, 140, 140), GREY, dtype=np.float32)
    white_matter = np.zeros(t1.shape, dtype=bool)
    white_matter[10:-10, 10:-10, 10:-10] = True
    t1[white_matter] = WHITE
    labels = np.where(white_matter, 0, 2).astype(np.uint8)
    labels[60:70, 60:70, 60:70] = 9  # an already labelled structure lesions must leave alone
    return paint_lesions(t1, labels, white_matter, 10, np.random.default_rng(0))


def test_every_lesion_kind_is_painted_once_within_the_size_range(painted):
    t1, labels, names = painted
    assert list(names.values()) == list(LESION_KINDS)
    assert (labels[60:70, 60:70, 60:70] == 9).all()
    for index in names:
        volume_ml = float((labels == index).sum()) / 1000.0
        assert 0.7 * VOLUME_ML[0] <= volume_ml <= 1.2 * VOLUME_ML[1]


def test_lesion_appearances_differ_from_uniform_painted_objects(painted):
    t1, labels, names = painted
    by_name = {name: labels == index for index, name in names.items()}
    ring = by_name["lesion_ring"]
    depth = ndimage.distance_transform_edt(ring)
    assert t1[ring & (depth <= RIM_MM)].mean() > WHITE > GREY > t1[ring & (depth > RIM_MM + 1)].mean()
    graded = t1[by_name["lesion_graded"]]
    assert graded.min() < GREY and graded.max() > WHITE  # a ramp through both tissue levels
    speckled = t1[by_name["lesion_speckled"]]
    assert GREY < speckled.mean() < WHITE and speckled.std() > 0.3 * (WHITE - GREY)
