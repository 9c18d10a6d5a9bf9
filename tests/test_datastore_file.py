"""The datastore index (datastore_v2.json) is replaced in one rename: a write that fails half-way leaves the old
index, whole."""

from __future__ import annotations

import json
import os

import pytest
from monailabel.datastore.local import LocalDatastore

from lib.datastore import ValidatingDatastore
from lib.datastore_file import write_atomically
from tests.server import sample_studies


def test_index_writes_go_through_a_rename_and_a_failed_one_keeps_the_old_index(tmp_path, monkeypatch):
    studies = sample_studies(tmp_path / "studies", ["subj_003"])
    store = ValidatingDatastore(str(studies), extensions=["*.nii.gz"], auto_reload=False)
    index = studies / "datastore_v2.json"
    store.update_image_info("subj_003", {"score": 1})
    assert json.loads(index.read_text())["objects"]["subj_003"]["image"]["info"]["score"] == 1
    assert oct(index.stat().st_mode & 0o777) == oct(0o644)

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        store.update_image_info("subj_003", {"score": 2})
    assert json.loads(index.read_text())["objects"]["subj_003"]["image"]["info"]["score"] == 1
    assert sorted(p.name for p in studies.iterdir() if p.name.startswith(".datastore")) == []
    monkeypatch.undo()

    reopened = LocalDatastore(str(studies), extensions=["*.nii.gz"], auto_reload=False)  # MONAI Label reads it back
    assert reopened.get_image_info("subj_003")["score"] == 1


def test_write_atomically_keeps_the_file_mode(tmp_path):
    path = tmp_path / "index.json"
    path.write_text("{}")
    path.chmod(0o600)
    write_atomically(str(path), '{"a": 1}')
    assert json.loads(path.read_text()) == {"a": 1} and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]
