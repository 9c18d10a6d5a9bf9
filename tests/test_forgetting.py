"""No forgetting: a fine-tune that loses Dice on a class the served model segments is not published, and one that
keeps every class is (the bundled starter, two real sample volumes, one held out for validation)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from monailabel.datastore.local import LocalDatastore

from lib.engine.model_store import ModelStore
from lib.engine.runtime import MODEL_SPACING_MM
from lib.trainers.sam3d_adapters import Sam3DAdapterTrain
from lib.training.forgetting import TOLERANCE
from tests.server import REPO_ROOT, SAMPLE, sample_studies

LABELED = ("subj_005", "subj_006")
LABELS = {"white_matter": 1, "grey_matter": 2, "lateral_ventricles": 3}
SHORT_FINE_TUNE = {"model": "sam3d", "device": "cpu", "max_epochs": 1, "crops_per_volume": 1, "val_split": 0.5,
                   "max_clicks": 2, "max_minutes": 3, "seed": 0}
# what a destructive learning rate costs the served model on some class (white matter alone loses 0.3 to 0.6)
DESTROYED = 0.2


def fine_tune(tmp_path: Path, lr: float) -> tuple[dict, ModelStore]:
    studies = sample_studies(tmp_path / "studies", LABELED, ["classes.txt"])
    datastore = LocalDatastore(str(studies), auto_reload=False)
    label_info = {"label_info": [{"name": n, "idx": i} for n, i in LABELS.items()]}
    for name in LABELED:
        label = tmp_path / f"{name}_label.nii.gz"
        shutil.copy(SAMPLE / "studies_gt" / f"{name}.nii.gz", label)
        datastore.save_label(name, str(label), "final", dict(label_info))
    models = ModelStore(REPO_ROOT / "model" / "starter.pt", adapter_root=tmp_path / "state" / "adapters")
    trainer = Sam3DAdapterTrain(str(tmp_path / "state" / "train"), models, LABELS, MODEL_SPACING_MM)
    return trainer({**SHORT_FINE_TUNE, "name": f"lr{lr}", "lr": lr}, datastore), models


@pytest.mark.parametrize("lr", [0.0, 0.5])
def test_a_fine_tune_is_published_only_if_no_class_loses_dice(tmp_path, lr):
    stats, models = fine_tune(tmp_path, lr)
    check = stats["publication"]["forgetting"]
    assert check["checked"] and set(check["served"]) == set(LABELS)  # every validated class, both states
    drops = [check["served"][c][n] - check["candidate"][c][n] for c in LABELS for n in check["served"][c]]
    if lr == 0.0:  # nothing learnt: every class keeps its Dice, so the state is published
        assert max(drops) <= TOLERANCE and not check["forgotten"]
        assert stats["publication"]["published"] == 1 and models.registry().current() == 1
    else:  # wrecked weights: the served state stays
        assert max(drops) > DESTROYED and check["forgotten"]
        assert stats["publication"]["published"] is None and models.registry().current() is None
