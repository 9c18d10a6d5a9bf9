"""Which source serves each class, and how the network's and the prototypes' label maps combine."""

from __future__ import annotations

import torch

from lib.segmentation.sources import NETWORK, PROTOTYPES, choose_sources, combine

LABELS = {"white_matter": 1, "grey_matter": 2, "ventricles": 3, "lesion": 4}
CHANNELS = {"white_matter": 1, "grey_matter": 2, "ventricles": 3}


def test_the_network_serves_a_class_only_when_trained_on_it_and_better_on_held_out_labels():
    validation = {"white_matter": {NETWORK: 0.8, PROTOTYPES: 0.4}, "grey_matter": {NETWORK: 0.5, PROTOTYPES: 0.5},
                  "ventricles": {NETWORK: 0.0, PROTOTYPES: 0.1}, "lesion": {NETWORK: 0.9, PROTOTYPES: 0.2}}
    trained = {"white_matter", "grey_matter", "ventricles"}  # the lesion appeared after the run
    assert choose_sources(validation, trained, sorted(LABELS)) == {
        "grey_matter": PROTOTYPES, "lesion": PROTOTYPES, "ventricles": PROTOTYPES, "white_matter": NETWORK}
    assert set(choose_sources({}, trained, sorted(LABELS)).values()) == {PROTOTYPES}  # nothing held out


def test_prototype_classes_fill_what_the_network_leaves_and_new_classes_paint_over_it():
    network = torch.tensor([1, 1, 1, 2, 2, 0, 0, 3], dtype=torch.uint8)  # channels
    prototypes = torch.tensor([3, 4, 0, 0, 3, 3, 0, 0], dtype=torch.uint8)  # label values
    label = combine(network, CHANNELS, ["white_matter", "grey_matter"], prototypes, LABELS, new_classes=["lesion"])
    # ventricles (trained, kept on prototypes) only where the network serves nothing; the network's own
    # ventricle channel is not served; the new lesion class shows over white matter
    assert label.tolist() == [1, 4, 1, 2, 2, 3, 0, 0]
