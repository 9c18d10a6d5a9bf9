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


def saved_label_names(studies: Path) -> list[dict[int, str]]:
    """The ``{index: name}`` of each final label saved with ``label_info`` in the studies' datastore file."""
    datastore = Path(studies) / DATASTORE_JSON
    if not datastore.is_file():
        return []
    try:
        objects = json.loads(datastore.read_text()).get("objects", {})
    except (OSError, ValueError):
        return []
    finals = [((obj.get("labels") or {}).get("final") or {}) for obj in objects.values()]
    return [names for final in finals if (names := parse_label_info(final.get("info")))]


def read_class_names(studies: Path) -> dict[int, str]:
    """``{index: name}``: ``classes.txt`` first, then every final label's info in the datastore (later wins)."""
    studies = Path(studies)
    names: dict[int, str] = {}
    if (studies / CLASSES_TXT).is_file():
        names.update(read_classes_txt(studies / CLASSES_TXT))
    for saved in saved_label_names(studies):
        names.update(saved)
    return dict(sorted(names.items()))


def class_key(name: str) -> str:
    """Names that differ only in case or ``-``/``_``/space name the same class."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def add_new_names(label_map: dict[str, int], names: list[str]) -> dict[str, int]:
    """``label_map`` plus each name it does not already hold (by :func:`class_key`), at the next free index."""
    merged = dict(label_map)
    known = {class_key(n) for n in merged}
    for name in names:
        if class_key(name) not in known:
            merged[name] = max(merged.values(), default=0) + 1
            known.add(class_key(name))
    return merged
