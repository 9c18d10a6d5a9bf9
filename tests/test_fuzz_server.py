"""Property-based fuzzing of the real server's infer and datastore parameters: any input gets an answer below 500,
the server keeps serving, and nothing is read or written outside the studies folder."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server import running_server, sample_studies

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("subj_005",)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
points = st.lists(st.lists(st.integers(-50, 400), min_size=0, max_size=4), max_size=3)
infer_keys = ("foreground", "background", "label", "roi", "box", "lasso", "result_extension", "result_dtype",
              "restore_label_idx", "label_info", "selected_label_name", "classes", "threshold", "uncertainty",
              "label_name", "image", "client_id")
infer_params = st.dictionaries(st.sampled_from(infer_keys), st.one_of(points, json_values), max_size=6)
image_ids = st.one_of(st.sampled_from([*IMAGES, "missing", "../subj_005", "/etc/passwd", "labels/final/x", ""]),
                      st.text(max_size=30))
form_json = st.one_of(json_values.map(json.dumps), st.text(max_size=20))  # JSON of any type, or not JSON
models = st.sampled_from(["sam3d", "sam3d_scribbles", "protosam3d", "nope"])


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz") / "studies"
    folder.mkdir()
    return sample_studies(folder, IMAGES)


@pytest.fixture(scope="module")
def server(studies, tmp_path_factory):
    conf = {"state_dir": str(tmp_path_factory.mktemp("state"))}
    with running_server(studies, conf, tmp_path_factory.mktemp("logs") / "server.log") as running:
        yield running


def snapshot(root: Path) -> dict[str, int]:
    """Every image and label file under ``root`` with its size (not MONAI Label's JSON index)."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()
            and not p.name.endswith(".json")}


def assert_answered(response: requests.Response) -> None:
    assert response.status_code < 500, f"{response.request.method} {response.url}: {response.status_code} " \
                                       f"{response.text[:300]}"


def test_infer_parameters(server, studies):
    @FUZZ
    @given(model=models, image=image_ids, params=st.one_of(infer_params.map(json.dumps), form_json))
    def run(model, image, params):
        response = requests.post(f"{server.url}/infer/{model}", params={"image": image}, data={"params": params},
                                 timeout=120)
        assert_answered(response)

    run()
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200
    assert [p.name for p in studies.parent.iterdir()] == ["studies"]  # nothing written beside the studies folder


def scribble_uploads(studies: Path) -> list[bytes]:
    """Label volumes a scribbles request may upload: strokes on the image's grid, none, another grid, not an image."""
    image = nib.load(studies / f"{IMAGES[0]}.nii.gz")
    strokes = np.zeros(image.shape, dtype=np.uint8)
    strokes[60:70, 60, 50], strokes[80:90, 60, 50] = 3, 2  # Slicer's default foreground / background indices
    uploads = []
    for array in (strokes, np.zeros(image.shape, dtype=np.uint8), strokes[:-3]):
        buffer = io.BytesIO()
        nib.Nifti1Image(array, image.affine).to_stream(buffer)  # uncompressed NIfTI
        uploads.append(buffer.getvalue())
    return [*uploads, b"", b"not an image"]


def test_scribbles_parameters_with_uploads(server, studies):
    @FUZZ
    @given(payload=st.sampled_from(scribble_uploads(studies)),
           params=st.one_of(infer_params.map(json.dumps), form_json))
    def run(payload, params):
        response = requests.post(f"{server.url}/infer/sam3d_scribbles", params={"image": IMAGES[0]},
                                 files={"label": ("label.nii", payload)}, data={"params": params}, timeout=120)
        assert_answered(response)

    run()
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200
    assert [p.name for p in studies.parent.iterdir()] == ["studies"]


def test_datastore_parameters(server, studies):
    before = snapshot(studies)
    payloads = st.sampled_from([b"", b"not an image", (studies / f"{IMAGES[0]}.nii.gz").read_bytes()[:5000]])

    @FUZZ
    @given(image=image_ids, tag=st.one_of(st.sampled_from(["final", "original", "../x", ""]), st.text(max_size=10)),
           payload=payloads, params=form_json, body=json_values.map(json.dumps))
    def run(image, tag, payload, params, body):
        for response in (
            requests.get(f"{server.url}/datastore/image", params={"image": image}, timeout=30),
            requests.get(f"{server.url}/datastore/image/info", params={"image": image}, timeout=30),
            requests.get(f"{server.url}/datastore/label", params={"label": image, "tag": tag}, timeout=30),
            requests.put(f"{server.url}/datastore/label", params={"image": image, "tag": tag},
                         files={"label": ("label.nii.gz", payload)}, data={"params": params}, timeout=60),
            requests.put(f"{server.url}/datastore/image", params={"image": image},
                         files={"file": ("image.nii.gz", payload)}, data={"params": params}, timeout=60),
            requests.put(f"{server.url}/datastore/image/info", params={"image": image}, data={"info": params},
                         timeout=30),
            requests.post(f"{server.url}/activelearning/{tag or 'random'}", data=body,
                          headers={"Content-Type": "application/json"}, timeout=30),
        ):
            assert_answered(response)

    run()
    assert snapshot(studies) == before  # nothing was saved, overwritten or removed
    assert [p.name for p in studies.parent.iterdir()] == ["studies"]


@pytest.mark.parametrize("body", ["NaN", "[Infinity]", "-Infinity", '{"client_id": NaN}', '{"a": [{"b": Infinity}]}'])
def test_next_sample_body_holding_nan_or_infinity_gets_a_422(server, body):
    """Not standard JSON, but Python's parser takes it: refused with a message (FastAPI's own validation-error
    handler answers 500 where the body is not an object, and a NaN ``client_id`` would be stored in the image info)."""
    response = requests.post(f"{server.url}/activelearning/random", data=body,
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 422, response.text
    assert "NaN or Infinity" in response.json()["detail"]
    assert requests.get(f"{server.url}/datastore/?output=all", timeout=30).status_code == 200
