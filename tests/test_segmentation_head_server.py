"""The ``segmentation`` trainer through the real server: saving the third final label starts it on its own
(``train_after_labels``), a SegResNet trained on the saved labels is published with the source of each class, and
``protosam3d`` then serves the classes it validated better on, with a higher Dice on a volume no run saw."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np

from bench.uncertainty import auroc
from lib.data.head import brain_mask
from lib.prompts.simulation import dice, next_click
from lib.segmentation.head import HeadStore
from tests.server import SAMPLE, client, running_server, sample_studies
from tests.test_training_server import wait_for_training

LABELED = ("subj_000", "subj_001", "subj_002")
UNLABELED = "subj_003"
CLASSES = {"white_matter": 1, "grey_matter": 2, "lateral_ventricles": 3}
LARGE = ("white_matter", "grey_matter")
# an epoch budget (2 training labels: 60 optimiser steps, about a minute here), so runs repeat on any machine
QUICK_HEAD = {"max_epochs": 30, "max_minutes": 10, "val_split": 0.34, "seed": 0}
AUTO_HEAD = {"train_after_labels": "3", "auto_train": "segmentation",
             **{f"segmentation_{key}": str(value) for key, value in QUICK_HEAD.items()}}
LABEL_INFO = [{"name": name, "idx": value} for name, value in CLASSES.items()]


def automatic(url: str) -> tuple[dict[str, float], dict, np.ndarray]:
    """protosam3d's Dice per class on the unseen volume, its result JSON, and where it is wrong."""
    label_file, result = client(url).infer("protosam3d", UNLABELED, {})
    label = np.asarray(nib.load(label_file).dataobj)
    truth = np.asarray(nib.load(SAMPLE / "studies_gt" / f"{UNLABELED}.nii.gz").dataobj)
    return {name: dice(label == value, truth == value) for name, value in CLASSES.items()}, result, label != truth


def uncertainty_auroc(url: str, errors: np.ndarray) -> tuple[float, dict]:
    """AUROC of the served uncertainty map for the automatic result's wrong voxels inside the brain."""
    map_file, result = client(url).infer("protosam3d", UNLABELED, {"uncertainty": True, "samples": 2})
    voxels = np.asarray(nib.load(map_file).dataobj)
    inside = brain_mask(np.asarray(nib.load(SAMPLE / "studies" / f"{UNLABELED}.nii.gz").dataobj, dtype=np.float32))
    return auroc(voxels[inside], errors[inside]), result


def corrected(url: str, automatic_mask: np.ndarray, name: str, folder) -> list[float]:
    """Dice after each of 3 ``sam3d`` clicks correcting ``name``'s automatic mask, as Slicer sends them: the current
    label uploaded with every click so far."""
    truth = np.asarray(nib.load(SAMPLE / "studies_gt" / f"{UNLABELED}.nii.gz").dataobj) == CLASSES[name]
    affine = nib.load(SAMPLE / "studies" / f"{UNLABELED}.nii.gz").affine
    current, clicks, dices = automatic_mask, {"foreground": [], "background": []}, []
    for step in range(3):
        point, is_foreground = next_click(current, truth)
        clicks["foreground" if is_foreground else "background"].append(point.tolist())
        upload = folder / f"current_{step}.nii.gz"
        nib.save(nib.Nifti1Image(current.astype(np.uint8), affine), str(upload))
        label_file, _ = client(url, "corrector").infer("sam3d", UNLABELED, {**clicks, "label_name": name}, str(upload))
        current = np.asarray(nib.load(label_file).dataobj) > 0
        dices.append(dice(current, truth))
    return dices


def test_saved_labels_train_a_head_that_serves_the_large_classes_it_validated_better_on(tmp_path):
    studies = sample_studies(tmp_path / "studies", (*LABELED, UNLABELED), ["classes.txt"])
    state = tmp_path / "state"
    with running_server(studies, {"state_dir": str(state), **AUTO_HEAD}, tmp_path / "server.log") as server:
        for name in LABELED:
            label = tmp_path / f"{name}_label.nii.gz"
            shutil.copy(SAMPLE / "studies" / "labels" / "final" / f"{name}.nii.gz", label)
            client(server.url).save_label(name, str(label), tag="final", params={"label_info": LABEL_INFO})
        # the third save queued the head's training; a run takes a minute, so this is still the prototypes' answer
        before, result, errors = automatic(server.url)
        assert set(result["sources"].values()) == {"prototypes"} and result["segmentation_head_version"] is None
        auroc_before, _ = uncertainty_auroc(server.url, errors)

        status = wait_for_training(server.url)
        assert status["status"] == "DONE" and status["request"]["model"] == "segmentation", status
        head = client(server.url).info()["models"]["protosam3d"]["segmentation_head"]
        assert head["version"] == 1 and set(head["segresnet_classes"]) >= set(LARGE), head
        assert (state / "segmentation" / "v0001.pt").is_file()

        after, result, errors = automatic(server.url)
        label_file, _ = client(server.url).infer("protosam3d", UNLABELED, {})
        automatic_label = np.asarray(nib.load(label_file).dataobj)
        assert result["segmentation_head_version"] == 1
        assert {name: result["sources"][name] for name in LARGE} == {name: "segresnet" for name in LARGE}
        # measured here: white matter 0.55 -> 0.75-0.76, grey matter 0.44 -> 0.78 (prototypes -> head; two runs)
        for name in LARGE:
            assert after[name] > max(0.65, before[name] + 0.1), (name, before, after)
        # every class is served by the source that did better on the held-out label; the ventricles sit on a knife
        # edge (the one-minute network's 0.00 here, 0.59 in a run whose crops were drawn differently, against the
        # prototypes' 0.08), so which side they fall on is not asserted
        _, metadata = HeadStore(state / "segmentation").read(1)
        validation = metadata["validation"]
        assert set(validation) == set(CLASSES), validation
        for name, scores in validation.items():
            better = "segresnet" if scores["segresnet"] > scores["prototypes"] else "prototypes"
            assert result["sources"][name] == better, (name, validation, result["sources"])

        # the uncertainty map now comes from the head's probabilities, and it finds the served result's errors
        auroc_after, result = uncertainty_auroc(server.url, errors)
        assert result["segmentation_head_version"] == 1 and "head" in result["uncertainty"]["unit"]
        # measured here: 0.52 (jittered prototypes) -> 0.72 (this one-minute head; 0.82 after 5 minutes, bench)
        assert auroc_after > max(0.65, auroc_before + 0.1), (auroc_before, auroc_after)

        # correcting the head's result with clicks keeps it: each click changes only the region it points at
        # (in a dev check without them, the first click took white matter from 0.86 to 0.51, grey matter 0.88 to 0.23)
        dices = corrected(server.url, automatic_label == CLASSES["white_matter"], "white_matter", tmp_path)
        assert min(dices) > after["white_matter"] - 0.02, (after["white_matter"], dices)
