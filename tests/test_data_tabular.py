"""Tabular loaders: MAF's split and standardisation on synthetic arrays, the MINIBOONE file checks,
and the breast cancer stand-in."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from taynode.data.tabular import (
    MINIBOONE_DIM,
    breast_cancer_provenance,
    load_breast_cancer,
    load_miniboone,
    miniboone_path,
    miniboone_provenance,
    split_and_standardize,
)


def synthetic(n, d, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(3.0, 2.0, size=(n, d)) * np.arange(1, d + 1)


def test_split_sizes_match_maf_for_miniboone_rows():
    """36,488 rows → 29,556 / 3,284 / 3,648, the published MINIBOONE split."""
    s = split_and_standardize(np.arange(36488.0)[:, None] % 97 + np.arange(36488.0)[:, None] / 1e4)
    assert s.sizes() == {"train": 29556, "validation": 3284, "test": 3648}


def test_split_order_and_standardisation_by_hand():
    x = synthetic(105, 4)
    s = split_and_standardize(x)
    # 105 rows: test = last int(10.5) = 10, validation = last int(9.5) = 9 of the other 95
    assert s.sizes() == {"train": 86, "validation": 9, "test": 10}
    mu, sd = x[:95].mean(0), x[:95].std(0)  # train + validation, population std
    np.testing.assert_allclose(s.mean, mu)
    np.testing.assert_allclose(s.std, sd)
    np.testing.assert_allclose(s.train, (x[:86] - mu) / sd)
    np.testing.assert_allclose(s.validation, (x[86:95] - mu) / sd)
    np.testing.assert_allclose(s.test, (x[95:] - mu) / sd)
    both = np.vstack([s.train, s.validation])
    np.testing.assert_allclose(both.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(both.std(0), 1, rtol=1e-12)
    assert s.dim == 4


@pytest.mark.parametrize(
    "data, message",
    [
        (np.zeros(30), "2-D"),
        (np.full((30, 2), np.nan), "non-finite"),
        (np.arange(20.0).reshape(10, 2), "at least 11 rows"),
        (np.c_[np.arange(30.0), np.ones(30)], "column 1 is constant"),
    ],
)
def test_split_rejects_bad_data(data, message):
    with pytest.raises(ValueError, match=message):
        split_and_standardize(data)


def test_load_miniboone_from_a_synthetic_file(tmp_path):
    x = synthetic(200, MINIBOONE_DIM, seed=1)
    path = miniboone_path(tmp_path)
    assert path == tmp_path / "miniboone" / "data.npy"
    path.parent.mkdir()
    np.save(path, x)
    s = load_miniboone(data_dir=tmp_path, dtype=np.float32)
    assert s.sizes() == {"train": 162, "validation": 18, "test": 20}
    assert s.train.dtype == np.float32 and s.dim == MINIBOONE_DIM
    np.testing.assert_allclose(s.test, (x[180:] - x[:180].mean(0)) / x[:180].std(0), rtol=1e-5, atol=1e-5)


def test_load_miniboone_missing_file_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"miniboone/data\.npy.*data/README\.md"):
        load_miniboone(data_dir=tmp_path)


def test_load_miniboone_wrong_dimension(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, synthetic(50, 42))
    with pytest.raises(ValueError, match="must have 43 columns"):
        load_miniboone(path)
    path.write_bytes(b"not an array")
    with pytest.raises(ValueError, match="not a readable .npy"):
        load_miniboone(path)


def test_breast_cancer_stand_in():
    from sklearn.datasets import load_breast_cancer as sk

    raw = sk().data
    s = load_breast_cancer()
    assert s.sizes() == {"train": 462, "validation": 51, "test": 56} and s.dim == 30
    assert s.name == "breast_cancer"
    perm = np.random.default_rng(0).permutation(569)
    rest = raw[perm][:513]
    np.testing.assert_allclose(s.test, (raw[perm][513:] - rest.mean(0)) / rest.std(0))
    again = load_breast_cancer()
    np.testing.assert_array_equal(s.train, again.train)  # deterministic
    unshuffled = load_breast_cancer(shuffle_seed=None)
    np.testing.assert_allclose(unshuffled.test, (raw[513:] - raw[:513].mean(0)) / raw[:513].std(0))
    with pytest.raises(ValueError, match="shuffle_seed must be"):
        load_breast_cancer(shuffle_seed=-1)


def test_miniboone_provenance_is_the_sha256_of_the_file(tmp_path):
    path = tmp_path / "miniboone" / "data.npy"
    path.parent.mkdir()
    np.save(path, synthetic(40, MINIBOONE_DIM))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert miniboone_provenance(path)["files"] == {"data.npy": expected}
    assert miniboone_provenance(data_dir=tmp_path)["files"] == {"data.npy": expected}
    assert miniboone_provenance(tmp_path / "absent.npy")["files"] == {"absent.npy": None}


def test_breast_cancer_provenance_is_the_csv_scikit_learn_reads():
    import sklearn
    import sklearn.datasets

    csv = Path(sklearn.datasets.__file__).parent / "data" / "breast_cancer.csv"
    # the file holds the 569 x 30 features load_breast_cancer returns (then the label column)
    rows = np.loadtxt(csv, delimiter=",", skiprows=1)
    np.testing.assert_array_equal(rows[:, :30], sklearn.datasets.load_breast_cancer().data)
    prov = breast_cancer_provenance(shuffle_seed=4)
    assert prov["files"] == {"breast_cancer.csv": hashlib.sha256(csv.read_bytes()).hexdigest()}
    assert prov["settings"] == {"shuffle_seed": 4} and f"scikit-learn {sklearn.__version__} " in prov["source"]


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_breast_cancer_provenance_rejects_a_bad_seed_in_one_line(seed):
    with pytest.raises(ValueError, match=f"^shuffle_seed must be an int >= 0 or None, got {seed!r}$"):
        breast_cancer_provenance(shuffle_seed=seed)
