"""MONAI Label's logging configuration, written into the app's own ``logs/`` folder.

``monailabel start_server`` without ``--log_config`` copies its default configuration to a new file in the
temporary folder at every start, before the app exists, and never removes it. The launchers (``scripts/serve.sh``,
the tests' server) pass this file instead: the same content, at a fixed path that each start replaces.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path


def write_log_config(app_dir: Path, log_file: str = "app.log") -> Path:
    """MONAI Label's default logging configuration with its log folder set to ``app_dir/logs``, as
    ``app_dir/logs/logging.json`` (replaced atomically: servers starting together read a whole file)."""
    package = Path(importlib.util.find_spec("monailabel").origin).parent  # without importing MONAI Label
    logs = app_dir.resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    text = (package / "logging.json").read_text()
    text = text.replace("${LOGDIR}", str(logs)).replace("${LOGFILE}", str(logs / log_file))
    path = logs / "logging.json"
    descriptor, partial = tempfile.mkstemp(suffix=".json", dir=logs)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
    os.replace(partial, path)
    return path


if __name__ == "__main__":
    print(write_log_config(Path(sys.argv[1])))
