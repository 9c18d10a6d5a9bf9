"""Trained baselines the automatic sources are measured against (not served by the app)."""
