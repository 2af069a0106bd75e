"""Tabular density-estimation data: MINIBOONE (MAF preprocessing) and an offline stand-in.

**Split and standardisation** (MAF's `miniboone.py`, used by FFJORD and the paper's
`ffjord_tabular.py`): of N rows in file order, the last ⌊0.1 N⌋ are the test split; of the
remaining M rows, the last ⌊0.1 M⌋ are the validation split; the rest is the training split.
Every split is standardised with the mean and (population, ddof = 0) standard deviation of
train + validation together. MINIBOONE (36,488 × 43): 29,556 / 3,284 / 3,648 rows.

**MINIBOONE** cannot be downloaded on the project's machines. Put the MAF-preprocessed file
(`miniboone/data.npy` of the MAF data archive) at `<data dir>/miniboone/data.npy`, where the data
dir is `$TAYNODE_DATA` or `<repo root>/data` (see `data/README.md`), or pass its path.

**The offline stand-in** is the Wisconsin diagnostic breast cancer data set (569 × 30, continuous
features) that scikit-learn's wheel ships (`sklearn.datasets.load_breast_cancer`). Its rows are
first permuted by `numpy.random.default_rng(0).permutation(569)` (so that the splits do not
follow the file's order), then split and standardised as above: 462 / 51 / 56 rows. The
labels are not used. It is *not* MINIBOONE; its numbers are not comparable to published ones.
Another `shuffle_seed` gives another split (the experiment's `split_seed`).

**Provenance.** `miniboone_provenance` and `breast_cancer_provenance` describe what a loader
reads, for a run record: the file's sha256 (computed: no checksum is pinned for either file) and,
for the stand-in, the scikit-learn version and the shuffle seed.

**A baseline.** `gaussian_nll(train, x)` fits a full-covariance Gaussian to the training rows
(maximum likelihood) and returns the per-row NLL (nats) of `x` under it: the number a flow must beat,
in the same standardised units.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from ._fetch import default_data_dir, sha256_file, sklearn_bundled_file

__all__ = [
    "TabularSplits",
    "split_and_standardize",
    "load_miniboone",
    "miniboone_path",
    "load_breast_cancer",
    "miniboone_provenance",
    "breast_cancer_provenance",
    "MINIBOONE_DIM",
    "gaussian_nll",
]

MINIBOONE_DIM = 43
MINIBOONE_FILE = Path("miniboone") / "data.npy"


@dataclasses.dataclass(frozen=True, eq=False)
class TabularSplits:
    """Standardised splits of a tabular data set (rows are examples).

    - `train`, `validation`, `test`: arrays `(rows, dim)`.
    - `mean`, `std`: the train + validation statistics used to standardise (`(dim,)`, original units).
    - `name`: the data set.
    - `shuffle_seed`: the seed of the row permutation before the split (None: the file's order).
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    name: str
    shuffle_seed: int | None = None

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])

    def sizes(self) -> dict:
        """Rows per split: `{"train": …, "validation": …, "test": …}`."""
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def split_and_standardize(data, *, name: str = "data", dtype=np.float64) -> TabularSplits:
    """MAF's split (last 10 % test, last 10 % of the rest validation) and standardisation.

    **Arguments**
    - `data`: a 2-D array, rows in the order that decides the split.
    - `name`: the data set, for errors and `TabularSplits.name`.
    - `dtype`: floating dtype of the returned arrays (statistics are computed in float64).

    **Returns** a `TabularSplits`.

    **Raises** `ValueError` naming `data` when it is not 2-D, holds a non-finite value, has too
    few rows for three non-empty splits, or has a column that is constant on train + validation.
    """
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"{name}: data must be a 2-D array (rows, columns), got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number) or not np.all(np.isfinite(data)):
        bad = "non-numeric" if not np.issubdtype(data.dtype, np.number) else "a non-finite value"
        raise ValueError(f"{name}: data holds {bad}")
    data = data.astype(np.float64)
    n = data.shape[0]
    n_test = int(0.1 * n)
    n_val = int(0.1 * (n - n_test))
    if n_val < 1:
        raise ValueError(f"{name}: data must have at least 11 rows for three non-empty splits, got {n}")
    rest, test = data[: n - n_test], data[n - n_test :]
    train, validation = rest[: len(rest) - n_val], rest[len(rest) - n_val :]
    mean, std = rest.mean(axis=0), rest.std(axis=0)
    constant = np.flatnonzero(std == 0)
    if constant.size:
        raise ValueError(f"{name}: data column {int(constant[0])} is constant on train + validation; drop it first")

    def standardise(x):
        return ((x - mean) / std).astype(dtype)

    return TabularSplits(standardise(train), standardise(validation), standardise(test), mean, std, name)


def miniboone_path(data_dir: str | os.PathLike | None = None) -> Path:
    """Where the MINIBOONE file is expected: `<data_dir>/miniboone/data.npy`.

    `data_dir` defaults to `$TAYNODE_DATA` or `<repo root>/data`.
    """
    return Path(data_dir if data_dir is not None else default_data_dir()) / MINIBOONE_FILE


def load_miniboone(
    path: str | os.PathLike | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    dtype=np.float64,
) -> TabularSplits:
    """MINIBOONE as preprocessed by MAF (d = 43), split and standardised as MAF and FFJORD.

    **Arguments**
    - `path`: the `.npy` file (default `miniboone_path(data_dir)`).
    - `data_dir`: the data cache root, when `path` is not given.
    - `dtype`: floating dtype of the returned arrays.

    **Returns** a `TabularSplits` (29,556 / 3,284 / 3,648 rows for the MAF file).

    **Raises** `FileNotFoundError` naming where to put the file when it is missing;
    `ValueError` naming the file when it is not a 2-D array of 43 finite columns.
    """
    path = Path(path) if path is not None else miniboone_path(data_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"MINIBOONE not found at {path}: it cannot be downloaded here; copy the MAF-preprocessed "
            "miniboone/data.npy there (see data/README.md)"
        )
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable .npy array ({err})") from None
    if data.ndim != 2 or data.shape[1] != MINIBOONE_DIM:
        raise ValueError(
            f"{path}: MINIBOONE must have {MINIBOONE_DIM} columns (MAF preprocessing), got shape {data.shape}"
        )
    return split_and_standardize(data, name=str(path), dtype=dtype)


def load_breast_cancer(*, shuffle_seed: int | None = 0, dtype=np.float64) -> TabularSplits:
    """The offline stand-in: scikit-learn's breast cancer features (569 × 30), split as MINIBOONE.

    **Arguments**
    - `shuffle_seed`: rows are permuted by `numpy.random.default_rng(shuffle_seed)` before the
      split (default 0: 462 / 51 / 56 rows); None keeps the file order.
    - `dtype`: floating dtype of the returned arrays.

    **Returns** a `TabularSplits` named `"breast_cancer"`.
    """
    from sklearn.datasets import load_breast_cancer as _sklearn_breast_cancer

    _check_shuffle_seed(shuffle_seed)
    data = _sklearn_breast_cancer().data
    if shuffle_seed is not None:
        data = data[np.random.default_rng(shuffle_seed).permutation(len(data))]
    splits = split_and_standardize(data, name="breast_cancer", dtype=dtype)
    return dataclasses.replace(splits, shuffle_seed=shuffle_seed)


def _check_shuffle_seed(shuffle_seed) -> None:
    if shuffle_seed is not None and (isinstance(shuffle_seed, bool) or not isinstance(shuffle_seed, int)
                                     or shuffle_seed < 0):
        raise ValueError(f"shuffle_seed must be an int >= 0 or None, got {shuffle_seed!r}")


def miniboone_provenance(path: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None) -> dict:
    """What `load_miniboone` loads from `path` (for a run record's `data` field).

    No checksum is pinned for the user-supplied file, so its sha256 is computed (about 12 MB to read).

    **Arguments** as for `load_miniboone`.

    **Returns** `{"source": ..., "files": {file name: sha256, or None when the file is not there}}`.
    """
    path = Path(path) if path is not None else miniboone_path(data_dir)
    return {"source": "MINIBOONE as preprocessed by MAF (a user-supplied file)",
            "files": {path.name: sha256_file(path) if path.is_file() else None}}


def breast_cancer_provenance(shuffle_seed: int | None = 0) -> dict:
    """What `load_breast_cancer(shuffle_seed=...)` loads (for a run record's `data` field); imports no scikit-learn.

    **Returns** `{"source": "scikit-learn <version> load_breast_cancer ...", "files": {"breast_cancer.csv":
    sha256}, "settings": {"shuffle_seed": ...}}`: the sha256 of the CSV file the installed scikit-learn
    reads (computed, 120 kB; None when scikit-learn is not installed).

    **Raises** `ValueError` naming `shuffle_seed` when it is not an int >= 0 or None.
    """
    _check_shuffle_seed(shuffle_seed)
    version, sha256 = sklearn_bundled_file("breast_cancer.csv")
    return {"source": f"scikit-learn {version} load_breast_cancer (Breast Cancer Wisconsin Diagnostic, "
                      "569 x 30; not MINIBOONE)",
            "files": {"breast_cancer.csv": sha256},
            "settings": {"shuffle_seed": shuffle_seed}}


def gaussian_nll(train, x) -> np.ndarray:
    """Per-row NLL (nats) of `x` under the full-covariance Gaussian fit to `train` by maximum likelihood.

    The fit is the training mean and covariance (ddof = 0); the NLL of a row v is
    ½[(v − μ)ᵀ Σ⁻¹ (v − μ) + log det(2π Σ)], computed in float64 through a Cholesky factor.

    **Arguments**: `train` `(n, d)` with n > d; `x` `(m, d)`.
    **Returns** an array `(m,)`.
    **Raises** `ValueError` naming `train` or `x` when the shapes do not fit or the covariance is singular.
    """
    train, x = np.asarray(train, np.float64), np.asarray(x, np.float64)
    if train.ndim != 2 or train.shape[0] <= train.shape[1]:
        raise ValueError(f"train must be a 2-D array with more rows than columns, got shape {train.shape}")
    if x.ndim != 2 or x.shape[1] != train.shape[1]:
        raise ValueError(f"x must have shape (rows, {train.shape[1]}) like train, got {x.shape}")
    mean = train.mean(axis=0)
    cov = np.cov(train, rowvar=False, ddof=0)
    eig = np.linalg.eigvalsh(cov)
    if eig[0] <= 1e-12 * eig[-1]:
        raise ValueError("train has a singular covariance: drop linearly dependent columns first")
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, (x - mean).T)  # L⁻¹ (v − μ), one column per row
    logdet = 2 * np.sum(np.log(np.diag(chol)))
    return 0.5 * (np.sum(white**2, axis=0) + logdet + train.shape[1] * np.log(2 * np.pi))
