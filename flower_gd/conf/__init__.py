"""Hydra config tree of flower-gd."""
