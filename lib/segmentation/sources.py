"""Which automatic source serves each class, and the label map that combines them.

A class goes to the trained network only when it was trained on the class and beats the prototypes on the
held-out labels; everything else (a class that has just appeared, a class the network misses, any class before
there are labels to validate on) stays with the prototypes."""

from __future__ import annotations

import torch

NETWORK = "segresnet"
PROTOTYPES = "prototypes"


def choose_sources(validation: dict[str, dict[str, float]], trained: set[str], classes: list[str]) -> dict[str, str]:
    """``{class: source}`` for ``classes``; ``validation`` holds the held-out Dice per class and source."""
    sources = {}
    for name in classes:
        scores = validation.get(name)
        better = scores is not None and name in trained and scores[NETWORK] > scores[PROTOTYPES]
        sources[name] = NETWORK if better else PROTOTYPES
    return sources


def combine(network_channels: torch.Tensor, channels: dict[str, int], network_classes: list[str],
            prototype_label: torch.Tensor, label_map: dict[str, int], new_classes: list[str]) -> torch.Tensor:
    """One label map (values from ``label_map``): the network's classes, then the prototype classes. A class the
    network was trained on but serves worse (kept on its prototypes) fills only what the network leaves to no
    class it serves: its prototypes are the less reliable source there. A class newer than the network
    (``new_classes``) is painted over everything, so it shows wherever its prototypes find it."""
    label = torch.zeros_like(prototype_label)
    for name in network_classes:
        label[network_channels == channels[name]] = label_map[name]
    free = label == 0
    for name, value in label_map.items():
        found = prototype_label == value
        if name in new_classes:
            label[found] = value
        elif name not in network_classes:
            label[found & free] = value
    return label
