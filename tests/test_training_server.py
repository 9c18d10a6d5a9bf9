"""Adapter training through the real server: labels saved over REST, a new version published and served live."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monailabel.client.client import MONAILabelClientException

from lib.model.adapter_file import file_sha256
from tests.server import client, running_server, sample_studies

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELED = ("subj_005", "subj_006")
UNLABELED = "subj_007"
LABEL_INFO = [{"name": "White Matter", "idx": 1}, {"name": "grey_matter", "idx": 2}, {"name": "ventricles", "idx": 3}]
# publication alone is tested here; whether a fine-tune may be published is tests/test_forgetting.py's business
QUICK_TRAINING = {"max_epochs": 2, "crops_per_volume": 1, "val_split": 0.5, "max_clicks": 2, "max_minutes": 3,
                  "keep_known_classes": False}
AUTO_TRAINING = {"train_after_labels": "2", "auto_train": "sam3d",
                 **{f"train_{k}": str(v) for k, v in QUICK_TRAINING.items()}}
CLICK = {"foreground": [[96, 110, 90]], "label": "white_matter"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    studies = sample_studies(tmp_path_factory.mktemp("studies"), (*LABELED, UNLABELED), ["classes.txt"])
    return studies, tmp_path_factory.mktemp("state")


def wait_for_training(url: str, timeout: float = 600.0) -> dict:
    """Poll ``/train`` until the run has finished; returns its status record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client(url).train_status()
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            return status
        time.sleep(2.0)
    raise TimeoutError("training did not finish")


def wait_for_status(url: str, wanted: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client(url).train_status().get("status") != wanted:
        assert time.monotonic() < deadline, f"training never reached {wanted}"
        time.sleep(0.2)


def served(url: str, image: str) -> tuple[np.ndarray, dict]:
    label_file, result = client(url).infer("sam3d", image, dict(CLICK))
    return np.asarray(nib.load(label_file).dataobj), result


def test_training_publishes_adapters_served_live_and_after_restart(folders, tmp_path):
    studies, state = folders
    base = REPO_ROOT / "model" / "starter.pt"
    base_hash = file_sha256([base])
    with running_server(studies, {"state_dir": str(state), **AUTO_TRAINING}, tmp_path / "server1.log") as server:
        status = client(server.url).train_start("sam3d", dict(QUICK_TRAINING))
        status = wait_for_training(server.url)
        assert status["status"] == "ERROR" and "No usable final labels" in "\n".join(status.get("details", []))

        before, result = served(server.url, UNLABELED)
        assert result["model_version"].startswith("starter.pt@") and "adapters" not in result["model_version"]
        for count, name in enumerate(LABELED, start=1):
            label = studies.parent / f"{name}_label.nii.gz"
            shutil.copy(REPO_ROOT / "data" / "sample" / "studies_gt" / f"{name}.nii.gz", label)
            client(server.url).save_label(name, str(label), tag="final", params={"label_info": LABEL_INFO})
            if count < 2:
                assert client(server.url).train_status()["status"] == "ERROR"  # one new label: no training yet

        wait_for_status(server.url, "RUNNING")  # the second new label started training on its own
        with pytest.raises(MONAILabelClientException) as busy:
            client(server.url).train_start("sam3d", dict(QUICK_TRAINING))
        assert "Status: 429" in str(busy.value.msg)
        assert wait_for_training(server.url)["status"] == "DONE"

        model = client(server.url).info()["models"]["sam3d"]["model"]
        assert model["adapter_version"] == 1 and model["base_sha256"] == base_hash
        assert model["adapter"]["classes"] == ["grey_matter", "ventricles", "white_matter"]  # app spelling kept
        assert {m for m in model["adapter"]["metrics"]} >= {"val_dice_1click", "val_dice_5clicks"}
        after, result = served(server.url, UNLABELED)
        assert result["model_version"].endswith("+adapters-v1")
        assert not any(result["embedding_cached"])  # the old version's embeddings were dropped
        assert not np.array_equal(before, after)  # the fine-tuned model segments differently
    assert file_sha256([base]) == base_hash  # the base checkpoint is never modified

    with running_server(studies, {"state_dir": str(state)}, tmp_path / "server2.log") as server:
        again, result = served(server.url, UNLABELED)
        assert result["model_version"].endswith("+adapters-v1")
        assert np.array_equal(again, after)
        client(server.url).train_start("sam3d", {**QUICK_TRAINING, "max_epochs": 100, "max_minutes": 10})
        time.sleep(20.0)  # loading and the first iterations
        client(server.url).train_stop()
        wait_for_training(server.url)
        model = client(server.url).info()["models"]["sam3d"]["model"]
        assert model["adapter_versions"] == [1]  # the killed run published nothing and broke nothing
        assert served(server.url, UNLABELED)[1]["model_version"].endswith("+adapters-v1")
    assert [p.name for p in (state / "adapters").rglob("*") if p.is_file()] == ["v0001.pt"]
