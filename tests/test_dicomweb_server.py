"""seg3d on a real PACS: Debian's Orthanc with DICOMweb on loopback, sample volumes stored as DICOM MR series over
STOW-RS, the server started with ``--studies http://127.0.0.1:PORT/dicom-web``, and the OHIF viewer that MONAI Label
serves at ``/ohif/`` driven in headless Chromium (Debian's) by Playwright."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
import SimpleITK as sitk
from dicomweb_client.api import DICOMwebClient
from playwright.sync_api import sync_playwright
from scipy.ndimage import affine_transform

from lib.data.build_sample import ensure_sample
from lib.data.dicom import nifti_to_dicom_series
from lib.prompts.simulation import dice, next_click
from tests.pacs import running_orthanc
from tests.server import client, running_server

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("subj_008", "subj_003")  # PIR and RAS
LABEL_INFO = [{"name": "white_matter", "idx": 1}, {"name": "grey_matter", "idx": 2},
              {"name": "lateral_ventricles", "idx": 3}]
CHROMIUM = "/usr/bin/chromium"
# the flags that keep Chromium from reaching for the network it does not have (each refused connection costs time)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
OHIF_PARAMS = {"result_extension": ".nrrd", "result_dtype": "uint8", "restore_label_idx": False}
# white matter after three clicks on a series from the PACS (measured 0.66, AMD EPYC, 2026-11-23)
WHITE_MATTER_DICE_AT_3_CLICKS = 0.6
# protosam3d white matter on a series, prototypes from one label saved as DICOM SEG (measured 0.24 with the
# CPU-stable prototypes, AMD EPYC, 2026-11-23; before them 0.3 to 0.48 depending on the machine's rounding)
PROTOSAM3D_WHITE_MATTER_DICE = 0.18


@dataclass(frozen=True)
class Series:
    uid: str
    study_uid: str
    image: nib.Nifti1Image  # the series as the server sees it (read back from the DICOM files)
    truth: np.ndarray  # ground truth on that grid


def series_as_read(folder: Path) -> nib.Nifti1Image:
    """The DICOM series read the way MONAI Label converts it (SimpleITK's GDCM series reader)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    path = folder.parent / f"{folder.name}.nii.gz"
    sitk.WriteImage(reader.Execute(), str(path))
    return nib.load(str(path))


def resample_nearest(label: nib.Nifti1Image, target: nib.Nifti1Image) -> np.ndarray:
    """``label`` on the voxel grid of ``target`` (world coordinates, nearest neighbour)."""
    voxel_to_voxel = np.linalg.inv(label.affine) @ target.affine
    return affine_transform(np.asarray(label.dataobj), voxel_to_voxel[:3, :3], voxel_to_voxel[:3, 3],
                            output_shape=target.shape, order=0)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as running:
        yield running


@pytest.fixture(scope="module")
def series(pacs, tmp_path_factory) -> dict[str, Series]:
    sample = ensure_sample(REPO_ROOT / "data" / "sample")
    folder = tmp_path_factory.mktemp("dicom")
    stow = DICOMwebClient(pacs.dicomweb)
    found = {}
    for name in IMAGES:
        files = nifti_to_dicom_series(sample / "studies" / f"{name}.nii.gz", folder / name, patient_id=name)
        datasets = [pydicom.dcmread(str(f)) for f in files]
        stow.store_instances(datasets)
        image = series_as_read(folder / name)
        truth = resample_nearest(nib.load(sample / "studies_gt" / f"{name}.nii.gz"), image)
        found[name] = Series(uid=str(datasets[0].SeriesInstanceUID), study_uid=str(datasets[0].StudyInstanceUID),
                             image=image, truth=truth)
    return found


@pytest.fixture(scope="module")
def server(pacs, series, tmp_path_factory):
    env = {"MONAI_LABEL_DICOMWEB_SEARCH_FILTER": json.dumps({"Modality": "MR"}),
           "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path_factory.mktemp("dicom_cache"))}
    conf = {"state_dir": str(tmp_path_factory.mktemp("state"))}
    with running_server(pacs.dicomweb, conf, tmp_path_factory.mktemp("logs") / "server.log", env=env) as running:
        yield running


def load_result(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Result voxels and RAS affine of a NIfTI or NRRD file."""
    image = sitk.ReadImage(path)
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    direction = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = direction, image.GetOrigin()
    return array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def test_series_from_the_pacs_are_the_datastore(server, series):
    info = client(server.url).info()
    assert info["datastore"]["total"] == len(IMAGES)
    sample = client(server.url, "annotator-a").next_sample("random", {})
    assert sample["id"] in {s.uid for s in series.values()}


def test_sam3d_on_a_series_returns_nrrd_as_ohif_asks(server, series):
    target = series["subj_008"]
    truth = target.truth == 1
    prediction = np.zeros(truth.shape, dtype=bool)
    foreground, background = [], []
    for _ in range(3):
        point, is_foreground = next_click(prediction, truth)
        (foreground if is_foreground else background).append(point.tolist())
        params = {"foreground": foreground, "background": background, "label": "white_matter", **OHIF_PARAMS}
        result_file, result = client(server.url).infer("sam3d", target.uid, params)
        assert result_file.endswith(".nrrd")
        array, affine = load_result(result_file)
        assert array.dtype == np.uint8 and array.shape == target.image.shape
        assert np.allclose(affine, target.image.affine, atol=1e-3)
        prediction = array > 0
    assert dice(prediction, truth) > WHITE_MATTER_DICE_AT_3_CLICKS


def test_dicom_seg_output_references_the_series(server, series, tmp_path):
    target = series["subj_003"]
    params = {"foreground": [np.argwhere(target.truth == 1)[0].tolist()], "label": "white_matter",
              "label_info": LABEL_INFO[:1]}
    response = requests.post(f"{server.url}/infer/sam3d", params={"image": target.uid, "output": "dicom_seg"},
                             data={"params": json.dumps(params)}, timeout=300)
    assert response.status_code == 200, response.text
    path = tmp_path / "result.dcm"
    path.write_bytes(response.content)
    seg = pydicom.dcmread(str(path))
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == target.uid
    assert int(seg.NumberOfFrames) > 0


def test_bad_labels_are_refused_before_anything_reaches_the_pacs(server, pacs, series, tmp_path):
    """The local datastore's checks (lib.datastore.check_label) on DICOMweb: empty label, other shape, other affine,
    not an image, raw voxels of the wrong count; each answers 4xx with the reason and stores no SEG."""
    target = series["subj_008"]
    truth, affine = target.truth.astype(np.uint8), target.image.affine
    shifted = affine.copy()
    shifted[:3, 3] += 5.0
    bad = {"empty": (np.zeros_like(truth), affine, "empty"),
           "shape": (truth[:-2], affine, "shape"),
           "affine": (truth, shifted, "affine")}
    for name, (array, label_affine, reason) in bad.items():
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(array, label_affine), str(path))
        with open(path, "rb") as f:
            response = requests.put(f"{server.url}/datastore/label", params={"image": target.uid, "tag": "final"},
                                    files={"label": (path.name, f)},
                                    data={"params": json.dumps({"label_info": LABEL_INFO})}, timeout=120)
        assert response.status_code == 422 and reason in response.text, (name, response.status_code, response.text)
    response = requests.put(f"{server.url}/datastore/label", params={"image": target.uid, "tag": "final"},
                            files={"label": ("label.nii.gz", b"not an image")}, timeout=120)
    assert response.status_code == 415, response.text
    response = requests.put(f"{server.url}/datastore/label", params={"image": target.uid, "tag": "final"},
                            files={"label": ("label.bin", bytes(10))}, timeout=120)  # OHIF's raw voxels, too few
    assert response.status_code == 422 and "voxel count" in response.text, response.text
    assert DICOMwebClient(pacs.dicomweb).search_for_series(search_filters={"Modality": "SEG"}) == []


def test_final_label_goes_to_the_pacs_as_dicom_seg_and_feeds_protosam3d(server, pacs, series, tmp_path):
    labelled, other = series["subj_008"], series["subj_003"]
    label_path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(labelled.truth.astype(np.uint8), labelled.image.affine), str(label_path))
    client(server.url).save_label(labelled.uid, str(label_path), "final", {"label_info": LABEL_INFO})

    segs = DICOMwebClient(pacs.dicomweb).search_for_series(search_filters={"Modality": "SEG"})
    assert len(segs) == 1
    assert client(server.url, "annotator-b").next_sample("random", {})["id"] == other.uid

    result_file, result = client(server.url).infer("protosam3d", other.uid, OHIF_PARAMS)
    array, _ = load_result(result_file)
    assert array.shape == other.image.shape
    assert dice(array == 1, other.truth == 1) > PROTOSAM3D_WHITE_MATTER_DICE


def test_ohif_shows_the_study_and_the_monai_label_panel_lists_both_models(server, series, tmp_path):
    study = series["subj_003"].study_uid
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            # the panel's server address (it defaults to port 8000 of the page's host)
            context.add_cookies([{"name": "MONAILABEL_SERVER_URL", "value": f"{server.url}/", "url": server.url}])
            page = context.new_page()
            page.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={study}", timeout=120_000)
            page.get_by_text("Confirm and Hide").click(timeout=120_000)
            page.wait_for_selector("canvas", timeout=120_000)
            page.locator("button.actionButton").first.click()  # connect
            page.get_by_text("Auto-Segmentation").wait_for(timeout=60_000)
            page.wait_for_timeout(3000)  # the slices finish rendering
            page.screenshot(path=str(tmp_path / "ohif_auto_segmentation.png"))  # protosam3d's section is open
            automatic = page.inner_text("body")
            page.get_by_text("Point Prompts").click()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(tmp_path / "ohif_point_prompts.png"))
            interactive = page.inner_text("body")
        finally:
            browser.close()
    assert "protosam3d" in automatic and "sam3d" in interactive.replace("protosam3d", "")
    assert "T1" in automatic  # the series description from the PACS, shown in the study browser and viewports
    assert all(path.stat().st_size > 50_000 for path in tmp_path.glob("ohif_*.png"))
