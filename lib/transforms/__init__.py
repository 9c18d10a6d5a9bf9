"""Transforms: model-space preprocessing of datastore images."""
