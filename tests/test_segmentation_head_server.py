"""The ``segmentation`` trainer through the real server: a SegResNet trained on the saved labels is published with
the source of each class, and ``protosam3d`` then serves the classes it validated better on, with a higher Dice
on a volume no run saw."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from lib.prompts.simulation import dice
from tests.server import SAMPLE, client, running_server, sample_studies
from tests.test_training_server import wait_for_training

LABELED = ("subj_000", "subj_001", "subj_002")
UNLABELED = "subj_003"
CLASSES = {"white_matter": 1, "grey_matter": 2, "lateral_ventricles": 3}
LARGE = ("white_matter", "grey_matter")
# an epoch budget (2 training labels: 60 optimiser steps, about a minute here), so runs repeat on any machine
QUICK_HEAD = {"max_epochs": 30, "max_minutes": 10, "val_split": 0.34, "seed": 0}


def automatic(url: str) -> tuple[dict[str, float], dict]:
    label_file, result = client(url).infer("protosam3d", UNLABELED, {})
    label = np.asarray(nib.load(label_file).dataobj)
    truth = np.asarray(nib.load(SAMPLE / "studies_gt" / f"{UNLABELED}.nii.gz").dataobj)
    return {name: dice(label == value, truth == value) for name, value in CLASSES.items()}, result


def test_a_trained_head_serves_the_large_classes_it_validated_better_on(tmp_path):
    studies = sample_studies(tmp_path / "studies", (*LABELED, UNLABELED),
                             ["classes.txt", *(f"labels/final/{name}.nii.gz" for name in LABELED)])
    state = tmp_path / "state"
    with running_server(studies, {"state_dir": str(state)}, tmp_path / "server.log") as server:
        before, result = automatic(server.url)
        assert set(result["sources"].values()) == {"prototypes"} and result["segmentation_head_version"] is None

        client(server.url).train_start("segmentation", dict(QUICK_HEAD))
        status = wait_for_training(server.url)
        assert status["status"] == "DONE", status
        head = client(server.url).info()["models"]["protosam3d"]["segmentation_head"]
        assert head["version"] == 1 and set(head["segresnet_classes"]) >= set(LARGE), head
        assert (state / "segmentation" / "v0001.pt").is_file()

        after, result = automatic(server.url)
        assert result["segmentation_head_version"] == 1
        assert {name: result["sources"][name] for name in LARGE} == {name: "segresnet" for name in LARGE}
        # measured here: white matter 0.55 -> 0.79, grey matter 0.44 -> 0.77 (prototypes -> head)
        for name in LARGE:
            assert after[name] > max(0.65, before[name] + 0.1), (name, before, after)
        # the class the network misses stays on its prototypes
        assert result["sources"]["lateral_ventricles"] == "prototypes"
