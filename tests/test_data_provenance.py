"""`Experiment.data_provenance`, a run record's `data` field: the raw files' sha256 against the files on
disk, the settings that change the data (and only those), JSON, and no data loaded to describe them."""

import functools
import hashlib
import json
import os
from pathlib import Path

import pytest

import taynode.data.mnist
import taynode.data.physionet
import taynode.data.tabular
from taynode.data import default_data_dir
from taynode.experiments import REGISTRY

REPO = Path(taynode.data.mnist.__file__).resolve().parents[3]
MIRROR = Path(os.environ.get("TAYNODE_MIRROR") or REPO.parent / "shared" / "data")

#: the raw files each experiment reads at the cpu preset, by data-cache subdirectory (data/README.md)
RAW = {
    "mnist": ("mnist", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                        "t10k-labels-idx1-ubyte")),
    "physionet": ("physionet2012", ("set-a.tar.gz", "set-b.tar.gz", "Outcomes-a.txt", "Outcomes-b.txt")),
    "toy": (None, ()),
    "ffjord2d": (None, ()),
}


def roots() -> list[Path]:
    """Where raw files may be: the data cache ($TAYNODE_DATA), <repo>/data, the mirror."""
    return list(dict.fromkeys((default_data_dir(), REPO / "data", MIRROR)))


def find_raw(subdir: str, name: str) -> Path | None:
    """The file under one of `roots()` (in `<root>/<subdir>/` or, as a mirror may hold it, `<root>/`), or None."""
    for root in roots():
        for path in (root / subdir / name, root / name):
            if path.is_file():
                return path
    return None


@functools.cache
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(RAW))
def test_files_are_named_as_the_data_cache_holds_them(name):
    assert sorted(REGISTRY[name].data_provenance(REGISTRY[name].config("cpu"))["files"]) == sorted(RAW[name][1])


CASES = [(name, file) for name, (_, files) in sorted(RAW.items()) for file in files]


@pytest.mark.parametrize("name,file", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_file_checksums_are_those_of_the_raw_files_on_disk(name, file):
    path = find_raw(RAW[name][0], file)
    if path is None:
        pytest.skip(f"{file} is in none of {', '.join(map(str, roots()))}")
    exp = REGISTRY[name]
    assert exp.data_provenance(exp.config("cpu"))["files"][file] == sha256_of(path)


def test_image_checksums_are_those_of_the_files_read():
    """The digits (the cpu preset): the CSV of the installed scikit-learn; MNIST (here at 14×14 block means):
    its four IDX files, with the image set and size among the settings."""
    import sklearn.datasets

    exp = REGISTRY["ffjord_mnist"]
    csv = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    assert exp.data_provenance(exp.config("cpu"))["files"] == {"digits.csv.gz": sha256_of(csv)}
    mnist14 = dict(images="mnist", image_size=14, train_size=10000, test_size=200)
    mnist = exp.data_provenance(exp.config("cpu", **mnist14))
    assert mnist["files"] == REGISTRY["mnist"].data_provenance(REGISTRY["mnist"].config("cpu"))["files"]
    assert mnist["settings"]["images"] == "mnist" and mnist["settings"]["image_size"] == 14
    big = exp.data_provenance(exp.config("cpu", **{**mnist14, "image_size": 28}))["settings"]
    assert {k: v for k, v in big.items() if k != "image_size"} == {
        k: v for k, v in mnist["settings"].items() if k != "image_size"} and big["image_size"] == 28


def test_tabular_checksum_is_that_of_the_file_it_reads(tmp_path):
    import numpy as np
    import sklearn.datasets

    exp = REGISTRY["ffjord_tabular"]
    csv = Path(sklearn.datasets.__file__).parent / "data" / "breast_cancer.csv"
    assert exp.data_provenance(exp.config("cpu"))["files"] == {"breast_cancer.csv": sha256_of(csv)}
    npy = tmp_path / "mb.npy"
    np.save(npy, np.arange(43.0 * 20).reshape(20, 43))
    cfg = exp.config("paper", data_path=str(npy))
    assert exp.data_provenance(cfg)["files"] == {"mb.npy": hashlib.sha256(npy.read_bytes()).hexdigest()}


# a field that changes the data, its new value, and the setting that must say so
CHANGES = [
    ("toy", "train_size", 64), ("toy", "z_range", 2.0),
    ("mnist", "train_size", 500), ("mnist", "eval_test_size", 500), ("mnist", "eval_train_size", 500),
    ("physionet", "implausible", "drop"), ("physionet", "train_size", 1000), ("physionet", "eval_test_size", 100),
    ("ffjord2d", "density", "pinwheel"), ("ffjord2d", "seed", 1), ("ffjord2d", "train_size", 5000),
    ("ffjord2d", "test_size", 500),
    ("ffjord_tabular", "split_seed", 3), ("ffjord_tabular", "train_size", 200),
    ("ffjord_mnist", "train_size", 1000), ("ffjord_mnist", "test_size", 100),
]
# fields that do not change the data: the provenance stays the same
KEEPS = [
    ("toy", "lr", 0.05), ("toy", "width", 8), ("toy", "seed", 3),
    ("mnist", "hidden", 50), ("mnist", "seed", 1), ("mnist", "epochs", 3),
    ("physionet", "lr", 5e-3), ("physionet", "latent_dim", 10), ("physionet", "seed", 2),
    ("ffjord2d", "width", 32), ("ffjord2d", "batch_size", 100),
    ("ffjord_tabular", "lr", 1e-3), ("ffjord_tabular", "hidden_mult", 3), ("ffjord_tabular", "seed", 1),
    ("ffjord_mnist", "lr", 1e-4), ("ffjord_mnist", "hidden", (8, 8)), ("ffjord_mnist", "seed", 1),
]


@pytest.mark.parametrize("name,field,value", CHANGES, ids=[f"{n}-{f}" for n, f, _ in CHANGES])
def test_a_field_that_changes_the_data_changes_the_settings(name, field, value):
    exp = REGISTRY[name]
    before = exp.data_provenance(exp.config("cpu"))["settings"]
    after = exp.data_provenance(exp.config("cpu", **{field: value}))["settings"]
    assert before[field] != value and after[field] == value
    derived = {"implausible": ("implausible_ranges",)}.get(field, ())  # settings that follow from the field
    assert {k: v for k, v in after.items() if k not in derived} == {
        **{k: v for k, v in before.items() if k not in derived}, field: value}


def test_the_physionet_rule_changes_its_ranges_and_the_cache_key():
    exp = REGISTRY["physionet"]
    phys, drop = (exp.data_provenance(exp.config("cpu", implausible=r)) for r in ("physiological", "drop"))
    assert phys["settings"]["implausible_ranges"]["Temp"] == [20.0, 45.0]
    assert drop["settings"]["implausible_ranges"]["Temp"] == [0.0, None]
    assert phys["cache_key"] != drop["cache_key"] and phys["files"] == drop["files"]
    # every run: split seed 0, an 80/20 split, the hourly grid (the experiment's docstring)
    assert {k: phys["settings"][k] for k in ("split_seed", "test_fraction", "quantization_minutes")} == {
        "split_seed": 0, "test_fraction": 0.2, "quantization_minutes": 60}


@pytest.mark.parametrize("name,field,value", KEEPS, ids=[f"{n}-{f}" for n, f, _ in KEEPS])
def test_a_field_that_does_not_change_the_data_leaves_the_provenance(name, field, value):
    exp = REGISTRY[name]
    assert exp.data_provenance(exp.config("cpu", **{field: value})) == exp.data_provenance(exp.config("cpu"))


@pytest.mark.parametrize("preset", ["smoke", "cpu", "gpu", "paper"])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_provenance_is_json_and_loads_no_data(name, preset, monkeypatch, tmp_path):
    def no_loading(*args, **kwargs):
        raise AssertionError("data loaded to describe them")

    for module, fn in [(taynode.data.mnist, "fetch_mnist"), (taynode.data.mnist, "load_mnist"),
                       (taynode.data.mnist, "read_idx"), (taynode.data.physionet, "fetch_physionet"),
                       (taynode.data.physionet, "load_physionet"), (taynode.data.tabular, "load_breast_cancer"),
                       (taynode.data.tabular, "load_miniboone")]:
        monkeypatch.setattr(module, fn, no_loading)
    monkeypatch.setenv("TAYNODE_DATA", str(tmp_path))  # an empty data cache: no raw file is needed
    exp = REGISTRY[name]
    prov = exp.data_provenance(exp.config(preset))
    assert json.loads(json.dumps(prov)) == prov
    assert {"source", "files", "settings"} <= set(prov) and isinstance(prov["source"], str)
    assert prov == exp.data_provenance(exp.config(preset))
