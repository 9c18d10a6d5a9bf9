"""The calls MONAI Label's 3D Slicer plugin makes, in its order and with its parameters, through ``MONAILabelClient``:
``/info``, next sample, DeepGrow infer (``label``, IJK ``foreground``/``background``, the config's first values,
``.nrrd``/``uint8`` results), save a final label with ``label_info``, train, infer again."""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import SimpleITK as sitk

from lib.prompts.simulation import dice, next_click
from tests.server import client, running_server, sample_studies
from tests.test_training_server import wait_for_training

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("subj_004", "subj_009", "subj_010")
LABEL_INFO = [{"name": "white_matter", "idx": 1}, {"name": "grey_matter", "idx": 2},
              {"name": "lateral_ventricles", "idx": 3}]
QUICK_TRAINING = {"max_epochs": 2, "crops_per_volume": 1, "val_split": 0, "max_clicks": 2, "max_minutes": 3}
# white matter after 3 clicks on whichever volume "Next sample" gives (0.54 to 0.67 measured on these three)
WHITE_MATTER_DICE_AT_3_CLICKS = 0.45
SECTIONS = {"infer": "models", "train": "trainers", "activelearning": "strategies", "scoring": "scoring"}


def slicer_config(info: dict, section: str, name: str) -> dict:
    """The plugin's ``getParamsFromConfig``: each config entry's first value."""
    config = info.get(SECTIONS[section], {}).get(name, {}).get("config", {})
    return {k: v[0] if isinstance(v, list) else v for k, v in config.items()}


def slicer_infer(url: str, model: str, image: str, params: dict) -> tuple[str, dict]:
    """The plugin's ``MONAILabelLogic.infer``: it always asks for an 8-bit NRRD."""
    return client(url, "slicer-user").infer(model, image, {**params, "result_extension": ".nrrd",
                                                           "result_dtype": "uint8"})


def nrrd_voxels(path: str) -> np.ndarray:
    return np.transpose(sitk.GetArrayFromImage(sitk.ReadImage(path)), (2, 1, 0))


def labelmap_nrrd(truth_path: Path, out: Path) -> Path:
    """A final label as the plugin uploads it: Slicer's labelmap export, an .nrrd on the image's grid."""
    image = sitk.ReadImage(str(truth_path))
    sitk.WriteImage(sitk.Cast(image, sitk.sitkUInt8), str(out), True)
    return out


def truth_of(name: str) -> Path:
    return REPO_ROOT / "data" / "sample" / "studies_gt" / f"{name}.nii.gz"


def wait_for_datalist_read(url: str, timeout: float = 120.0) -> None:
    """Until the running training's log shows the labels it trains on."""
    deadline = time.monotonic() + timeout
    while not any("Training on" in line for line in client(url).train_status().get("details", [])):
        assert time.monotonic() < deadline, "training never read its datalist"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    return sample_studies(tmp_path_factory.mktemp("studies"), IMAGES)


@pytest.fixture(scope="module")
def server(studies, tmp_path_factory):
    conf = {"state_dir": str(tmp_path_factory.mktemp("state")),
            **{f"train_{k}": str(v) for k, v in QUICK_TRAINING.items()}}
    with running_server(studies, conf, tmp_path_factory.mktemp("logs") / "server.log") as running:
        yield running


def test_slicer_session_click_save_train_click_again(server, studies, tmp_path):
    info = client(server.url).info()
    assert list(info["strategies"])[0] == "uncertainty"
    assert info["models"]["sam3d"]["type"] == "deepgrow" and info["models"]["protosam3d"]["type"] == "segmentation"
    assert info["models"]["sam3d_scribbles"]["type"] == "scribbles"  # shows the module's scribbles section
    assert list(info["labels"]) == [item["name"] for item in LABEL_INFO]
    assert slicer_config(info, "train", "sam3d")["max_epochs"] == QUICK_TRAINING["max_epochs"]

    sample = client(server.url, "slicer-user").next_sample("uncertainty",
                                                            slicer_config(info, "activelearning", "uncertainty"))
    image = sample["id"]
    assert image in IMAGES
    download = requests.get(f"{server.url}/datastore/image", params={"image": image}, timeout=60)
    assert download.content == (studies / f"{image}.nii.gz").read_bytes()

    truth = np.asarray(nib.load(truth_of(image)).dataobj) == 1
    prediction = np.zeros(truth.shape, dtype=bool)
    foreground, background, results = [], [], []
    for click in range(3):
        point, is_foreground = next_click(prediction, truth)
        (foreground if is_foreground else background).append(point.tolist())
        params = {"label": "white_matter", "foreground": foreground, "background": background,
                  **slicer_config(info, "infer", "sam3d"), **({"reset_state": True} if click == 0 else {})}
        result_file, result = slicer_infer(server.url, "sam3d", image, params)
        voxels = nrrd_voxels(result_file)
        assert result_file.endswith(".nrrd") and voxels.dtype == np.uint8 and voxels.shape == truth.shape
        assert result["voxels"] == int(voxels.sum()) > 0
        prediction = voxels > 0
        results.append(result)
    assert [r["embedding_cached"][-1] for r in results] == [False, True, True]
    assert dice(prediction, truth) > WHITE_MATTER_DICE_AT_3_CLICKS

    label = labelmap_nrrd(truth_of(image), tmp_path / "label.nrrd")
    saved = client(server.url, "slicer-user").save_label(image, str(label),
                                                         params={"label_info": LABEL_INFO, "model": "sam3d"})
    assert saved["image"] == image and saved["label"] == image
    stored = studies / "labels" / "final" / f"{image}.nrrd"
    assert np.array_equal(nrrd_voxels(str(stored)), np.asarray(nib.load(truth_of(image)).dataobj))
    offered = {client(server.url, f"other-{i}").next_sample("random", {})["id"] for i in range(6)}
    assert image not in offered

    client(server.url, "slicer-user").train_start("sam3d", slicer_config(info, "train", "sam3d"))
    assert wait_for_training(server.url)["status"] == "DONE"
    model = client(server.url).info()["models"]["sam3d"]["model"]
    assert model["adapter_version"] == 1
    assert [item["id"] for item in model["adapter"]["trained_on"]] == [image]

    _, again = slicer_infer(server.url, "sam3d", image, {"label": "white_matter", "foreground": foreground,
                                                         "background": background, "reset_state": True})
    assert again["model_version"].endswith("+adapters-v1") and again["embedding_cached"][-1] is False


def test_label_saved_during_training_is_kept_and_used_by_the_next_run(server, studies, tmp_path):
    labelled = {path.name.split(".")[0] for path in (studies / "labels" / "final").iterdir()}
    late = next(name for name in IMAGES if name not in labelled)
    client(server.url).train_start("sam3d", {})
    wait_for_datalist_read(server.url)
    label = labelmap_nrrd(truth_of(late), tmp_path / "late.nrrd")
    client(server.url, "second-annotator").save_label(late, str(label), params={"label_info": LABEL_INFO})
    assert wait_for_training(server.url)["status"] == "DONE"
    assert (studies / "labels" / "final" / f"{late}.nrrd").is_file()
    model = client(server.url).info()["models"]["sam3d"]["model"]
    assert late not in {item["id"] for item in model["adapter"]["trained_on"]}

    client(server.url).train_start("sam3d", {})
    assert wait_for_training(server.url)["status"] == "DONE"
    model = client(server.url).info()["models"]["sam3d"]["model"]
    assert model["adapter_version"] == 3
    assert late in {item["id"] for item in model["adapter"]["trained_on"]}
