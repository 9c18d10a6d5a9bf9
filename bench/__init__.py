"""Benchmarks: each takes --data (a MONAI Label studies folder with labels/final) and --checkpoint, prints JSON."""
