"""Measurement and maintenance scripts, run from the repository root as ``python -m scripts.NAME``
(so that they measure this tree's code, whatever is installed)."""
