"""The strategies on a real local datastore: scores, the hand-out window, the random fallback, ``random``."""

import logging
import time

import numpy as np
import pytest
from monailabel.datastore.local import LocalDatastore
from monailabel.tasks.activelearning.random import Random

from lib.activelearning.random import RecencyWeightedRandom
from lib.activelearning.uncertainty import UncertaintyStrategy
from tests.conftest import write_nifti


def datastore(tmp_path, names=("a", "b", "c")) -> LocalDatastore:
    for name in names:
        write_nifti(tmp_path / f"{name}.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    return LocalDatastore(str(tmp_path), auto_reload=False)


def test_without_scores_it_falls_back_to_random_and_says_why(tmp_path, caplog):
    store = datastore(tmp_path)
    with caplog.at_level(logging.INFO):
        picked = UncertaintyStrategy(seed=0)({"strategy": "uncertainty", "client_id": "x"}, store)
    assert picked["id"] in ("a", "b", "c") and picked["score"] is None
    assert "no volume has a sam3d_uncertainty score yet; random choice" in caplog.text


def test_highest_score_first_unless_another_annotator_just_got_it(tmp_path):
    store = datastore(tmp_path)
    for name, score in (("a", 0.2), ("b", 0.9), ("c", 0.5)):
        store.update_image_info(name, {"sam3d_uncertainty": {"score": score}})
    strategy = UncertaintyStrategy(window_s=60)
    assert strategy({"strategy": "uncertainty", "client_id": "x"}, store)["id"] == "b"
    store.update_image_info("b", {"strategy": {"uncertainty": {"ts": int(time.time()), "client_id": "x"}}})
    assert strategy({"strategy": "uncertainty", "client_id": "x"}, store)["id"] == "b"  # the same annotator again
    assert strategy({"strategy": "uncertainty", "client_id": "y"}, store)["id"] == "c"  # another one
    store.update_image_info("b", {"strategy": {"uncertainty": {"ts": int(time.time()) - 120, "client_id": "x"}}})
    assert strategy({"strategy": "uncertainty", "client_id": "y"}, store)["id"] == "b"  # the window has passed


def test_random_still_picks_when_every_volume_was_served_this_second(tmp_path):
    store = datastore(tmp_path)
    now = int(time.time())
    for name in ("a", "b", "c"):
        store.update_image_info(name, {"strategy": {"random": {"ts": now + 5, "client_id": "x"}}})
    with pytest.raises(ValueError, match="weights must be greater than zero"):
        Random()({"strategy": "random"}, store)  # MONAI Label's own: a 500 for the annotator
    assert RecencyWeightedRandom(seed=0)({"strategy": "random"}, store)["id"] in ("a", "b", "c")
