"""Measurement and data scripts (run from the repository root: python -m jobs.NAME)."""
