"""The experiments of the book, by name: each supplies data, model, loss, metrics and presets.

`REGISTRY` maps a name to its `taynode.experiment.Experiment`; the CLI verbs
(`taynode train|eval|sweep|penalties <experiment>`) are built by looping over it.
"""

from __future__ import annotations

from . import ffjord2d, ffjord_mnist, ffjord_tabular, mnist, physionet, toy

__all__ = ["REGISTRY", "get"]

REGISTRY = {exp.name: exp for exp in (toy.EXPERIMENT, mnist.EXPERIMENT, physionet.EXPERIMENT,
                                        ffjord2d.EXPERIMENT, ffjord_tabular.EXPERIMENT, ffjord_mnist.EXPERIMENT)}


def get(name: str):
    """The registered experiment called `name`."""
    if name not in REGISTRY:
        raise ValueError(f"experiment must be one of {sorted(REGISTRY)}, got {name!r}")
    return REGISTRY[name]
