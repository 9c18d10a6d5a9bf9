"""Training and evaluation with simulated interactive clicks."""
