"""Run Debian's Orthanc with its DICOMweb plugin on 127.0.0.1 for tests (temporary config and storage)."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.server import free_port, serving_process

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@dataclass(frozen=True)
class Pacs:
    url: str  # Orthanc's REST root

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"


def orthanc_config(storage: Path, http_port: int) -> dict:
    """Loopback-only, no DICOM listener, no authentication, DICOMweb at /dicom-web."""
    return {
        "Name": "seg3d-test-pacs",
        "StorageDirectory": str(storage / "db"),
        "IndexDirectory": str(storage / "db"),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado",
                     "Ssl": False, "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
    }


@contextlib.contextmanager
def running_orthanc(storage: Path, timeout: float = 60.0) -> Iterator[Pacs]:
    """Start Orthanc with a config in ``storage``; stop it (and keep its log there) afterwards."""
    if not shutil.which(ORTHANC):
        raise RuntimeError(f"{ORTHANC} is missing: scripts/test.sh installs Debian's orthanc and orthanc-dicomweb")
    port = free_port()
    storage.mkdir(parents=True, exist_ok=True)
    config = storage / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(storage, port), indent=2))
    url = f"http://127.0.0.1:{port}"
    args = [ORTHANC, "--verbose", str(config)]
    with serving_process(args, storage / "orthanc.log", f"{url}/dicom-web/studies", timeout):
        yield Pacs(url=url)
