"""Locations inside the repository (the package is installed in editable mode from src/)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
DATA = ROOT / "data"



def write_json(path, obj) -> Path:
    """Write `obj` as indented JSON to `path` atomically (a temporary file, then a rename), so a
    killed run never leaves a half-written record; creates the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)
    return path


__all__ = ["ROOT", "RESULTS", "DATA", "write_json"]
