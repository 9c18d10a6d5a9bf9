"""Automatic segmentation by a network trained on the saved labels: the SegResNet, its published versions, and
which source (network or prototypes) serves each class."""
