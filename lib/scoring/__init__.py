"""Scoring methods for active learning."""
