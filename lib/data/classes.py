"""Class names of a studies folder: from saved labels' ``label_info`` or a ``classes.txt`` of ``index name`` lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CLASSES_TXT = "classes.txt"
DATASTORE_JSON = "datastore_v2.json"  # MONAI Label LocalDatastore's file; per-label ``info`` holds what clients sent


def parse_label_info(info: Any) -> dict[int, str]:
    """Names from a label's info as 3D Slicer / OHIF send it: ``label_info`` ([{"name", "idx"}, ...]) or
    ``label_names`` ({name: idx}); background (index 0) is dropped."""
    names: dict[int, str] = {}
    if not isinstance(info, dict):
        return names
    for entry in info.get("label_info") or []:
        if isinstance(entry, dict) and "name" in entry and str(entry.get("idx", "")).lstrip("-").isdigit():
            names[int(entry["idx"])] = str(entry["name"])
    label_names = info.get("label_names")
    if isinstance(label_names, dict):
        for name, idx in label_names.items():
            if str(idx).lstrip("-").isdigit():
                names[int(idx)] = str(name)
    return {k: v for k, v in names.items() if k > 0}


def read_classes_txt(path: Path) -> dict[int, str]:
    """``index name`` lines; anything else is skipped."""
    names = {}
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1].strip()
    return names


def read_class_names(studies: Path) -> dict[int, str]:
    """``{index: name}``: ``classes.txt`` first, then every final label's info in the datastore (later wins)."""
    studies = Path(studies)
    names: dict[int, str] = {}
    if (studies / CLASSES_TXT).is_file():
        names.update(read_classes_txt(studies / CLASSES_TXT))
    datastore = studies / DATASTORE_JSON
    if datastore.is_file():
        try:
            objects = json.loads(datastore.read_text()).get("objects", {})
        except (OSError, ValueError):
            objects = {}
        for obj in objects.values():
            final = (obj.get("labels") or {}).get("final") or {}
            names.update(parse_label_info(final.get("info")))
    return dict(sorted(names.items()))
