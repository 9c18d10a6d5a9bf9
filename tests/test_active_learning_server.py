"""Uncertainty scoring and the ``uncertainty`` strategy through the real server (as Slicer's "Next sample")."""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

from tests.server import client, running_server, sample_studies

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELED = "subj_003"
UNLABELED = ("subj_004", "subj_005", "subj_006")
LABEL_INFO = [{"name": "white_matter", "idx": 1}, {"name": "grey_matter", "idx": 2}]


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    folder = sample_studies(tmp_path_factory.mktemp("studies"), (LABELED, *UNLABELED))
    (folder / "broken.nii.gz").write_bytes(b"not an image")  # an image that fails to load is skipped
    return folder


def save_label(url: str, folder: Path, name: str) -> None:
    truth = nib.load(REPO_ROOT / "data" / "sample" / "studies_gt" / f"{name}.nii.gz")
    label = np.where(np.isin(np.asarray(truth.dataobj), (1, 2)), np.asarray(truth.dataobj), 0).astype(np.uint8)
    path = folder / f"{name}_label.nii.gz"
    nib.save(nib.Nifti1Image(label, truth.affine), str(path))
    client(url).save_label(name, str(path), tag="final", params={"label_info": LABEL_INFO})


def scores(url: str) -> dict[str, float]:
    found = {}
    for name in UNLABELED:
        info = requests.get(f"{url}/datastore/image/info", params={"image": name}, timeout=30).json()
        if "sam3d_uncertainty" in info:
            found[name] = info["sam3d_uncertainty"]["score"]
    return found


def run_scoring(url: str, timeout: float = 600.0) -> dict:
    requests.post(f"{url}/scoring/sam3d_uncertainty", timeout=30).raise_for_status()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = requests.get(f"{url}/scoring/", timeout=30).json()
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            return status
        time.sleep(1.0)
    raise TimeoutError("scoring did not finish")


def test_scores_pick_the_most_uncertain_volume_for_one_annotator_at_a_time(studies, tmp_path):
    conf = {"state_dir": str(tmp_path / "state"), "labels": "white_matter,grey_matter"}
    with running_server(studies, conf, tmp_path / "server1.log") as server:
        info = client(server.url).info()
        assert list(info["strategies"])[0] == "uncertainty" and "sam3d_uncertainty" in info["scoring"]
        first = client(server.url, "ann-2").next_sample("uncertainty", {})
        # no label and no score yet: a random one of all four (and the unreadable file)
        assert first["id"] in (LABELED, *UNLABELED, "broken") and "random" in first.get("reason", "")

        save_label(server.url, tmp_path, LABELED)
        assert run_scoring(server.url)["status"] == "DONE"
        scored = scores(server.url)
        assert sorted(scored) == sorted(UNLABELED) and len(set(scored.values())) == 3, scored
        assert "Not scoring broken" in server.log()

        ranked = sorted(scored, key=scored.get, reverse=True)
        a = client(server.url, "ann-2").next_sample("uncertainty", {})
        b = client(server.url, "ann-3").next_sample("uncertainty", {})
        given_to_ann_2 = {first["id"], ranked[0]}
        assert a["id"] == ranked[0] and b["id"] == [n for n in ranked if n not in given_to_ann_2][0]
        assert client(server.url, "ann-2").next_sample("uncertainty", {})["id"] == ranked[0]

        uncertainty, result = client(server.url).infer("protosam3d", ranked[0], {"uncertainty": True})
        entropy = np.asarray(nib.load(uncertainty).dataobj)
        shape = nib.load(studies / f"{ranked[0]}.nii.gz").shape
        assert entropy.shape == shape and entropy.max() > 0
        assert result["uncertainty"]["score"] == pytest.approx(scored[ranked[0]], abs=1e-3)

        save_label(server.url, tmp_path, ranked[0])
        assert client(server.url, "ann-2").next_sample("uncertainty", {})["id"] != ranked[0]

    with running_server(studies, conf, tmp_path / "server2.log") as server:
        assert scores(server.url) == scored  # scores survive a restart
