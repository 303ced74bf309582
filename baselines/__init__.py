"""Baselines run through the same harness."""
