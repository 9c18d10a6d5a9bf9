"""What MONAI Label writes to the temporary folder (uploads, results) stays in the server's own folder, and no
server leaves it behind for long: the upload of a refused request, which MONAI Label never removes, included."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monailabel.client.client import MONAILabelClientException

from tests.server import client, running_server, sample_studies

IMAGE = "subj_003"


def volumes_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".nii.gz", ".nii", ".nrrd"))]


def test_a_refused_upload_stays_in_the_server_folder_which_the_next_start_removes(tmp_path_factory):
    studies = sample_studies(tmp_path_factory.mktemp("studies"), (IMAGE,))
    temp = tmp_path_factory.mktemp("system-tmp")
    empty = tmp_path_factory.mktemp("upload") / "scribbles.nii.gz"
    image = nib.load(studies / f"{IMAGE}.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(image.shape, dtype=np.uint8), image.affine), empty)
    logs = tmp_path_factory.mktemp("logs")
    with running_server(studies, {}, logs / "first.log", env={"TMPDIR": str(temp)}) as server:
        with pytest.raises(MONAILabelClientException) as error:
            client(server.url).infer("sam3d_scribbles", IMAGE, {}, str(empty))
        assert "Status: 422" in str(error.value.msg) and "No scribbles" in str(error.value.msg)
        [first] = list(temp.glob("seg3d-server-*"))
        assert first.name.startswith(f"seg3d-server-{server.pid}-")
        assert len(volumes_under(first)) == 1  # the refused upload: MONAI Label runs no clean-up after an error
    # uvicorn ends on SIGTERM by the signal, without exit hooks: the folder stays until the next server starts
    with running_server(studies, {}, logs / "second.log", env={"TMPDIR": str(temp)}) as server:
        [second] = list(temp.glob("seg3d-server-*"))
        assert second.name.startswith(f"seg3d-server-{server.pid}-") and not first.exists()
    assert volumes_under(temp) == []
    assert list(temp.glob("*.json")) == []  # MONAI Label's log configuration is the app's (lib/log_config.py)
