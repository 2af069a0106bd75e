"""Data sets: a verified download cache (`data/`, see `data/README.md`) and loaders.

`load_mnist()` returns MNIST as uint8 numpy arrays; `load_physionet()` the PhysioNet 2012 ICU time
series, split and scaled; `fetch_all()` fills the cache (used by `taynode data fetch`). The cache
root is `$TAYNODE_DATA` or `<repo root>/data`; a mirror directory is taken from `$TAYNODE_MIRROR`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._fetch import ChecksumError, FetchError, default_data_dir, default_mirror
from .mnist import fetch_mnist, load_mnist, read_idx
from .physionet import PhysioNet, PhysioNetSplit, fetch_physionet, load_physionet
from .tabular import TabularSplits, load_breast_cancer, load_miniboone, split_and_standardize
from .toy2d import TOY_DENSITIES, sample_toy2d

__all__ = [
    "load_mnist",
    "fetch_mnist",
    "fetch_all",
    "read_idx",
    "load_physionet",
    "fetch_physionet",
    "PhysioNet",
    "PhysioNetSplit",
    "load_miniboone",
    "load_breast_cancer",
    "split_and_standardize",
    "TabularSplits",
    "sample_toy2d",
    "TOY_DENSITIES",
    "ChecksumError",
    "FetchError",
    "default_data_dir",
    "default_mirror",
]


def fetch_all(
    progress: bool = True,
    *,
    data_dir: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Make sure every obtainable data set is in the cache (MNIST, PhysioNet 2012).

    **Arguments**
    - `progress`: print what is being fetched to stderr.
    - `data_dir`: cache root (default `$TAYNODE_DATA` or `<repo root>/data`).
    - `mirror`: mirror directory (default `$TAYNODE_MIRROR`, none if unset).

    **Returns** `{"<data set>/<file name>": path}`, e.g. `"mnist/train-images-idx3-ubyte"`,
    `"physionet2012/set-a.tar.gz"`.

    **Raises** `ChecksumError` (a `ValueError`) naming a cached file with the wrong sha256;
    `FetchError` (a `RuntimeError`) listing every source tried for a file set that could not
    be obtained.
    """
    paths = {f"mnist/{name}": path for name, path in fetch_mnist(data_dir, mirror, progress=progress).items()}
    paths |= {f"physionet2012/{n}": p for n, p in fetch_physionet(data_dir, mirror, progress=progress).items()}
    return paths
