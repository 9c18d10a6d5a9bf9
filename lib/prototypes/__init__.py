"""Mask-level class prototypes from image-encoder features (ProtoSAM3D idea) and automatic segmentation."""
