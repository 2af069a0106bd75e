"""Locations inside the repository (the package is installed in editable mode from src/)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
DATA = ROOT / "data"

__all__ = ["ROOT", "RESULTS", "DATA"]
