"""PhysioNet 2012 loader: record parsing, quantisation, -1 codes, implausible values, empty records, the
split, scaling with training statistics, the cache, checksums and sources — on small record files
written here, with the expected numbers worked out by hand; plus the facts of the real data when the
mirror is present."""

import gzip
import hashlib
import io
import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

import taynode.data as data_pkg
from taynode.data import _fetch
from taynode.data import physionet as pn

REPO = Path(pn.__file__).resolve().parents[3]
D = 37
F = {name: i for i, name in enumerate(pn.FEATURES)}


# --------------------------------------------------------------------------- synthetic records


def record(rid: int, rows: str = "", *, weight0: str | None = None) -> str:
    """A record file: header, RecordID, the four descriptors (Height and Gender -1), `rows` after."""
    head = f"Time,Parameter,Value\n00:00,RecordID,{rid}\n00:00,Age,54\n00:00,Gender,-1\n00:00,Height,-1\n"
    head += "00:00,ICUType,2\n"
    if weight0 is not None:
        head += f"00:00,Weight,{weight0}\n"
    return head + "".join(f"{ln}\n" for ln in rows.strip().splitlines())


# Each record, and by hand what it becomes on the hourly grid: {(hour, feature): value}.
RECORDS = {
    "set-a": {
        # -1 weight code at 00:00; two weights in hour 1 (00:40, 01:20) averaged; 00:30 goes to hour 0
        # and 01:30 to hour 2 (half-way: the even hour); two HR values in hour 2 averaged
        200001: record(200001, """
            00:30,HR,100
            00:40,Weight,80
            01:20,Weight,82
            01:30,HR,110
            02:29,HR,90
            """, weight0="-1"),
        # no series at all, Weight -1: empty
        200002: record(200002, weight0="-1"),
        # only a valid admission weight: no time series, empty
        200003: record(200003, weight0="70"),
        # implausible pH 735 and Temp -17.8 (dropped by default); HR 0 is a possible reading, kept
        200004: record(200004, """
            03:00,pH,735
            03:10,pH,7.40
            04:00,Temp,-17.8
            04:05,Temp,37.0
            05:00,HR,0
            """, weight0="75"),
        # 47:30 goes to hour 48 (half-way, even); 48:00 is the last grid point
        200005: record(200005, """
            12:00,Glucose,120
            47:30,HR,70
            48:00,HR,60
            """),
    },
    "set-b": {
        300001: record(300001, """
            00:00,HR,80
            06:45,Temp,36.5
            """, weight0="90"),
        300002: record(300002, """
            10:00,HR,75
            10:20,pH,7.3
            11:00,Urine,0
            11:10,Glucose,150
            """),
        300003: record(300003, """
            20:00,HR,120
            20:31,Temp,38
            """),
    },
}

EXPECTED = {  # hourly cells by hand, implausible values dropped
    200001: {(1, "Weight"): 81.0, (0, "HR"): 100.0, (2, "HR"): 100.0},
    200002: {},
    200003: {(0, "Weight"): 70.0},
    200004: {(0, "Weight"): 75.0, (3, "pH"): 7.40, (4, "Temp"): 37.0, (5, "HR"): 0.0},
    200005: {(12, "Glucose"): 120.0, (48, "HR"): 65.0},
    300001: {(0, "Weight"): 90.0, (0, "HR"): 80.0, (7, "Temp"): 36.5},
    300002: {(10, "HR"): 75.0, (10, "pH"): 7.3, (11, "Urine"): 0.0, (11, "Glucose"): 150.0},
    300003: {(20, "HR"): 120.0, (21, "Temp"): 38.0},
}
EXPECTED_KEEP = {**EXPECTED, 200004: {**EXPECTED[200004], (3, "pH"): (735 + 7.40) / 2, (4, "Temp"): (-17.8 + 37.0) / 2}}
# the physiological rule also removes HR 0 (below 20 bpm); Urine 0 (anuria) is survivable and stays
EXPECTED_PHYS = {**EXPECTED, 200004: {k: v for k, v in EXPECTED[200004].items() if k != (5, "HR")}}
EXPECTED_BY_RULE = {"drop": EXPECTED, "keep": EXPECTED_KEEP, "physiological": EXPECTED_PHYS}
# values each rule removes from the synthetic records, per feature
REMOVED_BY_RULE = {"drop": {"pH": 1, "Temp": 1}, "keep": {}, "physiological": {"pH": 1, "Temp": 1, "HR": 1}}
EMPTY = (200002, 200003)
DEATH = {200001: 0, 200002: 1, 200003: 0, 200004: 1, 200005: 0, 300001: 0, 300002: 1, 300003: 0}


def outcomes(ids) -> str:
    lines = ["RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death"]
    lines += [f"{r},10,5,7,-1,{DEATH.get(r, 0)}" for r in ids]
    return "\n".join(lines) + "\n"


def tarball(set_name: str, records: dict, *, order=None, prefix: str = "", mtime: int = 1325376000) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rid in order or sorted(records):
            b = records[rid].encode()
            info = tarfile.TarInfo(f"{prefix}{set_name}/{rid}.txt")
            info.size, info.mtime = len(b), mtime
            tar.addfile(info, io.BytesIO(b))
    return buf.getvalue()


def blobs(records=RECORDS, **kw) -> dict[str, bytes]:
    out = {}
    for s, letter in (("set-a", "a"), ("set-b", "b")):
        out[f"{s}.tar.gz"] = tarball(s, records[s], **kw)
        out[f"Outcomes-{letter}.txt"] = outcomes(sorted(records[s])).encode()
    return out


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def install(directory: Path, files: dict, monkeypatch, *, checksums=None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, b in files.items():
        (directory / name).write_bytes(b)
    monkeypatch.setattr(pn, "SHA256", checksums or {name: sha(b) for name, b in files.items()})


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    monkeypatch.delenv("TAYNODE_DATA", raising=False)
    monkeypatch.delenv("TAYNODE_MIRROR", raising=False)


@pytest.fixture
def synth(tmp_path, monkeypatch):
    """The synthetic files in `<tmp>/data/physionet2012`; returns the data dir."""
    install(tmp_path / "data" / "physionet2012", blobs(), monkeypatch)
    return tmp_path / "data"


def offline(**kw):
    return dict(allow_url=False, progress=False) | kw


def expected_split(ids, seed=0, test_fraction=0.2):
    """The documented rule, written out again: rank by sha256("physionet2012:<seed>:<id>")."""
    ranked = sorted(ids, key=lambda r: hashlib.sha256(f"physionet2012:{seed}:{r}".encode()).digest())
    n_test = round(test_fraction * len(ids))
    return set(ranked[n_test:]), set(ranked[:n_test])


def dense(cells: dict) -> tuple[np.ndarray, np.ndarray]:
    v, m = np.zeros((49, D)), np.zeros((49, D), dtype=bool)
    for (h, f), x in cells.items():
        v[h, F[f]], m[h, F[f]] = x, True
    return v, m


# --------------------------------------------------------------------------- parse_record


def test_parse_record_by_hand():
    rec = pn.parse_record(RECORDS["set-a"][200001], name="r200001")
    assert rec.record_id == 200001 and rec.has_series
    v, m = dense(EXPECTED[200001])
    np.testing.assert_array_equal(rec.mask, m)
    np.testing.assert_allclose(rec.values, v, rtol=0, atol=1e-12)
    assert rec.values.shape == (49, 37) and rec.values[1, F["Weight"]] == 81.0
    assert rec.missing_codes[F["Weight"]] == 1 and rec.missing_codes.sum() == 1  # descriptors' -1 not counted
    assert rec.implausible.sum() == 0 and rec.removed.sum() == 0


@pytest.mark.parametrize(
    "time, q, slot",
    [("00:29", 60, 0), ("00:30", 60, 0), ("00:31", 60, 1), ("01:30", 60, 2), ("02:30", 60, 2),
     ("47:30", 60, 48), ("48:00", 60, 48), ("00:03", 6, 0), ("00:09", 6, 2), ("00:10", 6, 2), ("00:00", 2880, 0),
     ("24:00", 2880, 0), ("24:01", 2880, 1)],
)  # fmt: skip
def test_quantisation_to_nearest_slot_ties_to_even(time, q, slot):
    rec = pn.parse_record(record(1, f"{time},HR,50"), quantization_minutes=q)
    assert rec.mask.shape == (2880 // q + 1, D)
    assert np.argwhere(rec.mask).tolist() == [[slot, F["HR"]]]


@pytest.mark.parametrize("mode", ["drop", "keep", "physiological"])
def test_implausible_values(mode):
    rec = pn.parse_record(RECORDS["set-a"][200004], implausible=mode)
    v, m = dense(EXPECTED_BY_RULE[mode][200004])
    np.testing.assert_array_equal(rec.mask, m)
    np.testing.assert_allclose(rec.values, v, rtol=0, atol=1e-12)
    # values outside the possible ranges are counted whatever the rule
    assert rec.implausible[F["pH"]] == 1 and rec.implausible[F["Temp"]] == 1 and rec.implausible.sum() == 2
    assert {f: int(rec.removed[j]) for f, j in F.items() if rec.removed[j]} == REMOVED_BY_RULE[mode]
    # a zero heart rate is a possible number (kept by drop) but not a survivable one
    assert bool(rec.mask[5, F["HR"]]) is (mode != "physiological")


def test_physiological_ranges_are_documented_and_inside_the_possible_ones():
    assert set(pn.PHYSIOLOGICAL_RANGES) == set(pn.FEATURES)
    for f, (lo, hi) in pn.PHYSIOLOGICAL_RANGES.items():
        vlo, vhi = pn.VALID_RANGES[f]
        assert vlo <= lo < hi <= vhi, f
    # every feature has its one-line reason in the source comment above the table
    source = Path(pn.__file__).read_text()
    table = source[source.index("#: Generous survivable range") : source.index("PHYSIOLOGICAL_RANGES: dict")]
    for f in pn.FEATURES:
        assert f"#: - {f} " in table or f", {f} " in table or f" and {f} " in table, f


def test_physiological_rule_keeps_the_bounds_and_removes_what_lies_outside():
    """A synthetic record holding, for every feature, both bounds and a value just outside each."""
    rows, inside, outside = [], {}, {}
    for j, (f, (lo, hi)) in enumerate(pn.PHYSIOLOGICAL_RANGES.items()):
        eps = 7e-4 * (hi - lo)  # never lands on the missing code -1
        hh = 1 + j  # one hour per feature
        rows += [f"{hh:02d}:00,{f},{lo}", f"{hh:02d}:10,{f},{hi}", f"{hh + 1:02d}:20,{f},{lo - eps}",
                 f"{hh + 1:02d}:25,{f},{hi + eps}"]
        inside[f], outside[f] = (lo + hi) / 2, 2
    rec = pn.parse_record(record(1, "\n".join(rows)), implausible="physiological")
    assert {f: int(rec.removed[F[f]]) for f in pn.FEATURES} == outside
    for j, f in enumerate(pn.PHYSIOLOGICAL_RANGES):  # the two bounds are kept and averaged in their hour
        assert rec.mask[1 + j, F[f]] and rec.values[1 + j, F[f]] == pytest.approx(inside[f], rel=1e-12)
        assert rec.mask[:, F[f]].sum() == 1
    # the same record under "drop" keeps whatever is possible (only negative values, pH > 14, ... go)
    drop = pn.parse_record(record(1, "\n".join(rows)), implausible="drop")
    assert (drop.removed == drop.implausible).all() and drop.removed.sum() < rec.removed.sum()


@pytest.mark.parametrize("mode", ["drop", "physiological"])
def test_scaling_uses_training_statistics_after_the_rule(tmp_path, monkeypatch, mode):
    """A training record with Temp 0 °C and a 0 kg weight: the physiological rule keeps them out of the minimum."""
    train_ids, _ = expected_split(sorted(EXPECTED))
    rid = min(train_ids - set(EMPTY))
    records = {s: dict(r) for s, r in RECORDS.items()}
    s = "set-a" if rid < 300000 else "set-b"
    records[s][rid] = records[s][rid] + "06:00,Temp,0\n07:00,Weight,0\n"
    install(tmp_path / "data" / "physionet2012", blobs(records), monkeypatch)
    d = pn.load_physionet(tmp_path / "data", implausible=mode, **offline())
    assert rid in d.train.record_ids
    expected = EXPECTED_BY_RULE[mode]
    for f in ("Temp", "Weight"):
        xs = [x for r in train_ids - set(EMPTY) for (_, g), x in expected[r].items() if g == f]
        want = 0.0 if mode == "drop" else min(xs)
        assert d.data_min[F[f]] == want, f
    assert d.info["removed"] == ({**REMOVED_BY_RULE[mode], "Temp": 2, "Weight": 1} if mode == "physiological"
                                 else REMOVED_BY_RULE[mode])


@pytest.mark.parametrize("rid, has_series", [(200002, False), (200003, False), (300001, True)])
def test_has_series(rid, has_series):
    s = "set-a" if rid < 300000 else "set-b"
    rec = pn.parse_record(RECORDS[s][rid])
    assert rec.has_series is has_series
    assert rec.mask.sum() == len(EXPECTED[rid])


@pytest.mark.parametrize(
    "text, match",
    [
        ("Time,Param,Value\n00:00,RecordID,1\n", "header"),
        ("", "header"),
        ("Time,Parameter,Value\n00:00,RecordID,1\n01:00,Shoe size,44\n", "line 3: unknown parameter 'Shoe size'"),
        ("Time,Parameter,Value\n00:00,RecordID,1\n49:00,HR,80\n", "line 3: time '49:00' is outside"),
        ("Time,Parameter,Value\n00:00,RecordID,1\n01:00,HR,nan\n", "line 3: value 'nan' is not a finite"),
        ("Time,Parameter,Value\n00:00,RecordID,1\n01:00,HR\n", "line 3: cannot parse"),
        ("Time,Parameter,Value\n00:00,RecordID,1\n1h,HR,80\n", "line 3: cannot parse"),
        ("Time,Parameter,Value\n01:00,HR,80\n", "no RecordID line"),
        ("Time,Parameter,Value\n00:00,RecordID,1\n00:00,RecordID,2\n", "line 3: a second RecordID"),
    ],
)
def test_parse_record_errors(text, match):
    with pytest.raises(ValueError, match=match) as e:
        pn.parse_record(text, name="set-x.tar.gz:set-x/1.txt")
    assert str(e.value).startswith("set-x.tar.gz:set-x/1.txt") and "\n" not in str(e.value)


# --------------------------------------------------------------------------- split rule


def test_split_rule_by_hand():
    ids = list(range(140000, 140010))
    train, test = pn.split_record_ids(ids, 0.2, seed=0)
    want_train, want_test = expected_split(ids)
    assert set(test.tolist()) == want_test and set(train.tolist()) == want_train
    assert len(test) == 2 and len(train) == 8 and list(train) == sorted(train)
    # order of the input does not matter; another seed gives another split
    shuffled = ids[::-1]
    for a, b in zip(pn.split_record_ids(shuffled, 0.2, 0), (train, test)):
        np.testing.assert_array_equal(a, b)
    assert set(pn.split_record_ids(ids, 0.2, 1)[1].tolist()) == expected_split(ids, seed=1)[1]
    assert any(set(pn.split_record_ids(ids, 0.2, s)[1].tolist()) != want_test for s in (1, 2, 3))


def test_split_of_one_record_does_not_depend_on_the_others():
    ids = list(range(1, 2001))
    _, test_all = pn.split_record_ids(ids, 0.5, 0)
    # ranks are fixed per ID: the test split of a subset is the first half of the same ranking
    ranked = sorted(ids, key=lambda r: hashlib.sha256(f"physionet2012:0:{r}".encode()).digest())
    assert set(test_all.tolist()) == set(ranked[:1000])


@pytest.mark.parametrize("ids, fraction, match", [([1, 2], 0.2, "leaves a split empty"), ([1, 1, 2], 0.5, "distinct")])
def test_split_rule_errors(ids, fraction, match):
    with pytest.raises(ValueError, match=match):
        pn.split_record_ids(ids, fraction, 0)


# --------------------------------------------------------------------------- load_physionet


def check_split(split, expected, ids, lo, hi, quant=60):
    assert list(split.record_ids) == sorted(ids)
    assert split.values.shape == split.mask.shape == (len(ids), 2880 // quant + 1, D)
    assert split.values.dtype == split.mask.dtype == np.float64
    for i, rid in enumerate(split.record_ids):
        v, m = dense(expected[rid])
        np.testing.assert_array_equal(split.mask[i], m.astype(float))
        np.testing.assert_allclose(split.values[i], np.where(m, (v - lo) / hi, 0.0), rtol=0, atol=1e-12)
        assert split.in_hospital_death[i] == DEATH[rid]


@pytest.mark.parametrize("mode", ["drop", "keep", "physiological"])
def test_load_by_hand(synth, mode):
    d = pn.load_physionet(synth, implausible=mode, **offline())
    expected = EXPECTED_BY_RULE[mode]
    all_ids = sorted(expected)
    want_train, want_test = expected_split(all_ids)
    train_ids, test_ids = want_train - set(EMPTY), want_test - set(EMPTY)
    assert d.info["empty_record_ids"] == EMPTY
    assert not set(d.train.record_ids) & set(d.test.record_ids)
    assert set(d.train.record_ids) | set(d.test.record_ids) | set(EMPTY) == set(all_ids)

    # training statistics by hand: per feature over the training records' cells only
    lo, hi = np.zeros(D), np.ones(D)
    for f, j in F.items():
        xs = [x for r in train_ids for (_, g), x in expected[r].items() if g == f]
        if xs:
            lo[j], hi[j] = min(xs), (max(xs) or 1.0)
    np.testing.assert_allclose(d.data_min, lo, rtol=0, atol=1e-12)
    np.testing.assert_allclose(d.data_max, hi, rtol=0, atol=1e-12)
    check_split(d.train, expected, train_ids, lo, hi)
    check_split(d.test, expected, test_ids, lo, hi)
    np.testing.assert_allclose(d.train.times, np.arange(49) / 48, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(d.test.times, d.train.times)
    assert d.train.times[0] == 0.0 and d.train.times[-1] == 1.0
    assert d.features == pn.FEATURES and len(d.features) == 37
    assert not set(pn.STATIC) & set(d.features)
    assert d.info["missing_codes"] == {"Weight": 2}  # 200001 and 200002 at 00:00
    assert d.info["implausible"] == {"pH": 1, "Temp": 1}
    assert d.info["removed"] == REMOVED_BY_RULE[mode]
    assert d.info["implausible_rule"] == mode and d.info["n_records"] == {"set-a": 5, "set-b": 3}


def test_train_statistics_ignore_the_test_split(synth):
    d = pn.load_physionet(synth, **offline())
    # every test value is scaled with the training statistics, whatever the test records hold
    for i, rid in enumerate(d.test.record_ids):
        for (h, f), x in EXPECTED[rid].items():
            assert d.test.values[i, h, F[f]] == pytest.approx((x - d.data_min[F[f]]) / d.data_max[F[f]], abs=1e-12)
    train_hr = [x for r in d.train.record_ids for (_, f), x in EXPECTED[r].items() if f == "HR"]
    assert d.data_min[F["HR"]] == min(train_hr)


def test_split_does_not_depend_on_file_order(tmp_path, monkeypatch):
    install(tmp_path / "one" / "physionet2012", blobs(), monkeypatch)
    a = pn.load_physionet(tmp_path / "one", **offline())
    files = blobs()
    for s in ("set-a", "set-b"):  # members in reverse order, other names and metadata
        files[f"{s}.tar.gz"] = tarball(s, RECORDS[s], order=sorted(RECORDS[s], reverse=True), prefix="./", mtime=1)
    install(tmp_path / "two" / "physionet2012", files, monkeypatch)
    b = pn.load_physionet(tmp_path / "two", **offline())
    for x, y in ((a.train, b.train), (a.test, b.test)):
        np.testing.assert_array_equal(x.record_ids, y.record_ids)
        np.testing.assert_array_equal(x.values, y.values)


def test_quantization_setting(synth):
    d = pn.load_physionet(synth, quantization_minutes=30, **offline())
    assert d.train.times.shape == (97,) and d.train.times[1] == pytest.approx(0.5 / 48)
    split = d.train if 200001 in d.train.record_ids else d.test
    i = int(np.flatnonzero(split.record_ids == 200001)[0])
    # 00:30 → slot 1, 00:40 → slot 1, 01:20 → slot 3 (80 min / 30 = 2.67), 01:30 → slot 3, 02:29 → slot 5
    hr, w = np.flatnonzero(split.mask[i, :, F["HR"]]).tolist(), np.flatnonzero(split.mask[i, :, F["Weight"]]).tolist()
    assert hr == [1, 3, 5] and w == [1, 3]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"seed": 1.5}, "seed must be an int"),
        ({"seed": True}, "seed must be an int"),
        ({"test_fraction": 0}, "test_fraction must be a number strictly between 0 and 1"),
        ({"test_fraction": 1.2}, "test_fraction must be"),
        ({"test_fraction": "0.2"}, "test_fraction must be"),
        ({"quantization_minutes": 7}, "quantization_minutes must be an int dividing 2880"),
        ({"quantization_minutes": 0}, "quantization_minutes must be"),
        ({"quantization_minutes": 60.0}, "quantization_minutes must be"),
        ({"implausible": "clip"}, r"implausible must be one of \('drop', 'physiological', 'keep'\), got 'clip'"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        pn.load_physionet(tmp_path / "nothing", **offline(**kwargs))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "nothing").exists()  # checked before touching any file


# --------------------------------------------------------------------------- cache


def test_cache_is_used_and_keyed(synth, monkeypatch):
    d = pn.load_physionet(synth, **offline())
    path = d.info["cache"]
    assert path.parent == synth / "physionet2012" and path.name.startswith("physionet2012-taynode-derived-")
    assert path.suffix == ".npz" and path.name not in pn.SHA256
    with np.load(path) as z:
        assert "Open Data Commons Attribution" in str(z["attribution"])

    def no_parse(*a, **k):
        raise AssertionError("parsed again although the cache exists")

    monkeypatch.setattr(pn, "_parse_all", no_parse)
    d2 = pn.load_physionet(synth, seed=3, **offline())  # the split is not part of the parsed cache
    assert d2.info["cache"] == path
    assert set(d2.test.record_ids) == expected_split(sorted(EXPECTED), seed=3)[1] - set(EMPTY)
    # another parsing setting: another cache file, so parsing is needed (and fails here)
    with pytest.raises(AssertionError, match="parsed again"):
        pn.load_physionet(synth, implausible="keep", **offline())
    with pytest.raises(AssertionError, match="parsed again"):
        pn.load_physionet(synth, implausible="physiological", **offline())
    with pytest.raises(AssertionError, match="parsed again"):
        pn.load_physionet(synth, quantization_minutes=30, **offline())
    # the name carries the key: raw checksums and parsing settings
    key = pn._cache_key(60, "drop")
    assert path.name == f"physionet2012-taynode-derived-{key[:16]}.npz"
    phys = pn._cache_key(60, "physiological")
    assert len({key, pn._cache_key(60, "keep"), pn._cache_key(30, "drop"), phys}) == 4
    # the ranges are part of the key: another table, another cache
    monkeypatch.setitem(pn.PHYSIOLOGICAL_RANGES, "Temp", (25.0, 45.0))
    assert pn._cache_key(60, "physiological") != phys
    monkeypatch.setitem(pn.SHA256, "Outcomes-a.txt", sha(b"other"))
    assert pn._cache_key(60, "drop") != key


@pytest.mark.parametrize("rule", ["drop", "physiological", "keep"])
def test_provenance_names_the_files_cache_and_settings_the_loader_used(synth, rule):
    """Without loading: the sha256 of the files on disk, the key stored in the cache the loader writes,
    and the settings the loaded data report."""
    prov = pn.provenance(seed=3, test_fraction=0.25, quantization_minutes=30, implausible=rule)
    d = pn.load_physionet(synth, seed=3, test_fraction=0.25, quantization_minutes=30, implausible=rule, **offline())
    on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
               for p in (synth / "physionet2012").glob("*") if not p.name.endswith(".npz")}
    assert prov["files"] == on_disk and len(on_disk) == 4
    with np.load(d.info["cache"]) as z:
        assert prov["cache_key"] == str(z["key"])
    s = prov["settings"]
    assert (s["split_seed"], s["test_fraction"], s["quantization_minutes"], s["implausible"]) == (
        d.info["seed"], d.info["test_fraction"], d.info["quantization_minutes"], d.info["implausible_rule"])


@pytest.mark.parametrize("rule,ranges", [
    # the bounds the module docstring states
    ("drop", {"Temp": [0.0, None], "pH": [0.0, 14.0], "FiO2": [0.0, 1.0], "HCT": [0.0, 100.0]}),
    ("physiological", {"Temp": [20.0, 45.0], "pH": [6.5, 8.0], "FiO2": [0.21, 1.0], "HR": [20.0, 300.0]}),
])
def test_provenance_holds_the_ranges_of_the_rule(rule, ranges):
    got = pn.provenance(implausible=rule)["settings"]["implausible_ranges"]
    assert len(got) == 37 and {k: got[k] for k in ranges} == ranges
    assert pn.provenance(implausible="keep")["settings"]["implausible_ranges"] is None


@pytest.mark.parametrize("kw,match", [({"implausible": "clip"}, "^implausible must be one of"),
                                      ({"seed": -1}, "^seed must be an int >= 0, got -1$"),
                                      ({"quantization_minutes": 7}, "^quantization_minutes must be an int dividing")])
def test_provenance_rejects_bad_arguments_in_one_line(kw, match):
    with pytest.raises(ValueError, match=match) as e:
        pn.provenance(**kw)
    assert "\n" not in str(e.value)


def test_no_cache_writes_nothing(synth):
    d = pn.load_physionet(synth, cache=False, **offline())
    assert d.info["cache"] is None
    assert not list((synth / "physionet2012").glob("*.npz"))


def test_corrupt_cache_is_a_one_line_error(synth):
    path = pn.load_physionet(synth, **offline()).info["cache"]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"unreadable cache.*delete it") as e:
        pn.load_physionet(synth, **offline())
    assert path.name in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- checksums, truncation, sources


def test_truncated_tarball_in_data_dir_fails_its_checksum(tmp_path, monkeypatch):
    files = blobs()
    good = {name: sha(b) for name, b in files.items()}
    full = files["set-a.tar.gz"]
    files["set-a.tar.gz"] = full[: len(full) // 2]
    install(tmp_path / "data" / "physionet2012", files, monkeypatch, checksums=good)
    with pytest.raises(_fetch.ChecksumError) as e:
        pn.load_physionet(tmp_path / "data", **offline())
    msg = str(e.value)
    assert "set-a.tar.gz" in msg and good["set-a.tar.gz"] in msg and sha(files["set-a.tar.gz"]) in msg
    assert "delete" in msg and "\n" not in msg
    assert (tmp_path / "data" / "physionet2012" / "set-a.tar.gz").read_bytes() == files["set-a.tar.gz"]


@pytest.mark.parametrize("cut", [0.5, 0.9, 20])
def test_truncated_tarball_with_matching_checksum_is_not_parsed(tmp_path, monkeypatch, cut):
    files = blobs()
    full = files["set-b.tar.gz"]
    files["set-b.tar.gz"] = full[: int(len(full) * cut) if cut < 1 else cut]
    install(tmp_path / "data" / "physionet2012", files, monkeypatch)  # checksums of the truncated file
    with pytest.raises(ValueError, match=r"set-b\.tar\.gz: truncated or corrupt gzip tar archive") as e:
        pn.load_physionet(tmp_path / "data", **offline())
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "data" / "physionet2012").glob("*.npz"))


def test_wrong_checksum_in_mirror_is_reported(tmp_path, monkeypatch):
    files = blobs()
    checksums = {name: sha(b) for name, b in files.items()} | {"Outcomes-b.txt": "f" * 64}
    install(tmp_path / "mirror" / "physionet2012", files, monkeypatch, checksums=checksums)
    with pytest.raises(_fetch.FetchError) as e:
        pn.load_physionet(tmp_path / "data", tmp_path / "mirror", **offline())
    line = next(ln for ln in str(e.value).splitlines() if ln.startswith("  - mirror"))
    assert "Outcomes-b.txt" in line and "f" * 64 in line and sha(files["Outcomes-b.txt"]) in line
    dest = tmp_path / "data" / "physionet2012"
    assert sorted(p.name for p in dest.iterdir()) == ["Outcomes-a.txt", "set-a.tar.gz", "set-b.tar.gz"]


@pytest.mark.parametrize("layout", ["physionet2012", ""])
def test_mirror_is_used_and_copied(tmp_path, monkeypatch, layout):
    files = blobs()
    install(tmp_path / "mirror" / layout if layout else tmp_path / "mirror", files, monkeypatch)
    d = pn.load_physionet(tmp_path / "data", tmp_path / "mirror", **offline())
    assert len(d.train) + len(d.test) == 6
    for name, b in files.items():
        assert (tmp_path / "data" / "physionet2012" / name).read_bytes() == b


def test_mirror_from_env(tmp_path, monkeypatch):
    install(tmp_path / "m" / "physionet2012", blobs(), monkeypatch)
    monkeypatch.setenv("TAYNODE_MIRROR", str(tmp_path / "m"))
    monkeypatch.setenv("TAYNODE_DATA", str(tmp_path / "d"))
    d = pn.load_physionet(**offline())
    assert d.info["cache"].parent == tmp_path / "d" / "physionet2012"


def test_no_source_lists_every_source(tmp_path, monkeypatch):
    monkeypatch.setattr(pn, "SHA256", {name: sha(b) for name, b in blobs().items()})
    (tmp_path / "mirror").mkdir()
    with pytest.raises(_fetch.FetchError) as e:
        pn.load_physionet(tmp_path / "data", tmp_path / "mirror", **offline())
    lines = str(e.value).splitlines()
    assert any(ln.strip().startswith("- data dir") for ln in lines)
    assert any(f"mirror {tmp_path / 'mirror'}" in ln and "does not have" in ln for ln in lines)
    url = "url https://physionet.org/files/challenge-2012/1.0.0/"
    assert any(url in ln and "allow_url=False" in ln for ln in lines)
    assert len(e.value.failures) == 3


def canonical_bytes(set_name: str, records: dict) -> bytes:
    """The documented canonical packing, written out again: GNU tar, fixed metadata, `gzip -n -6`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        d = tarfile.TarInfo(set_name)
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o775, 1325376000
        tar.addfile(d)
        for name, b in sorted((f"{set_name}/{rid}.txt", text.encode()) for rid, text in records.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(b), 0o664, 1325376000
            tar.addfile(info, io.BytesIO(b))
    return subprocess.run(["gzip", "-n", "-6", "-c"], input=buf.getvalue(), capture_output=True, check=True).stdout


@pytest.mark.skipif(shutil.which("gzip") is None, reason="gzip not on PATH")
def test_url_source_repacks_physionets_tarballs(tmp_path, monkeypatch):
    canonical = {}
    site = tmp_path / "site"
    site.mkdir()
    for s, letter in (("set-a", "a"), ("set-b", "b")):
        canonical[f"{s}.tar.gz"] = canonical_bytes(s, RECORDS[s])
        order = list(RECORDS[s])
        random.Random(0).shuffle(order)
        (site / f"{s}.tar.gz").write_bytes(tarball(s, RECORDS[s], order=order, prefix="./", mtime=1600000000))
        (site / f"Outcomes-{letter}.txt").write_text(outcomes(sorted(RECORDS[s])))
        canonical[f"Outcomes-{letter}.txt"] = outcomes(sorted(RECORDS[s])).encode()
    monkeypatch.setattr(pn, "SHA256", {name: sha(b) for name, b in canonical.items()})
    monkeypatch.setattr(pn, "URL_BASE", site.as_uri())
    d = pn.load_physionet(tmp_path / "data", **offline(allow_url=True))
    for name, b in canonical.items():
        assert (tmp_path / "data" / "physionet2012" / name).read_bytes() == b
    assert len(d.train) + len(d.test) == 6


@pytest.mark.skipif(shutil.which("gzip") is None, reason="gzip not on PATH")
def test_url_download_with_other_records_is_rejected(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    changed = {s: dict(RECORDS[s]) for s in RECORDS}
    changed["set-a"][200005] = changed["set-a"][200005].replace("HR,60", "HR,61")
    for name, b in blobs(changed).items():
        (site / name).write_bytes(b)
    checksums = {name: sha(b) for name, b in blobs().items()}
    checksums |= {f"{s}.tar.gz": sha(canonical_bytes(s, RECORDS[s])) for s in RECORDS}
    monkeypatch.setattr(pn, "SHA256", checksums)
    monkeypatch.setattr(pn, "URL_BASE", site.as_uri())
    with pytest.raises(_fetch.FetchError) as e:
        pn.load_physionet(tmp_path / "data", **offline(allow_url=True))
    url_line = next(ln for ln in str(e.value).splitlines() if "url " in ln)
    assert "set-a.tar.gz: sha256" in url_line and "set-b" not in url_line
    assert not (tmp_path / "data" / "physionet2012" / "set-a.tar.gz").exists()


def test_canonical_tarball_rejects_a_truncated_download(tmp_path):
    src = tmp_path / "set-a.tar.gz"
    full = tarball("set-a", RECORDS["set-a"])
    src.write_bytes(full[: len(full) - 30])
    with pytest.raises(ValueError, match="set-a.tar.gz: truncated or corrupt"):
        pn.canonical_tarball(src, tmp_path / "out.tar.gz", set_name="set-a")
    assert not (tmp_path / "out.tar.gz").exists()


# --------------------------------------------------------------------------- consistency errors


def test_outcomes_must_list_the_same_records(tmp_path, monkeypatch):
    files = blobs()
    files["Outcomes-b.txt"] = outcomes([300001, 300002, 300003, 399999]).encode()
    install(tmp_path / "data" / "physionet2012", files, monkeypatch)
    with pytest.raises(ValueError, match=r"set-b\.tar\.gz and .*Outcomes-b\.txt disagree.*0 records only in the archive"
                       r".*1 only in the Outcomes file \(e\.g\. \[399999\]\)"):
        pn.load_physionet(tmp_path / "data", **offline())


def test_record_id_must_match_the_file_name(tmp_path, monkeypatch):
    recs = {s: dict(RECORDS[s]) for s in RECORDS}
    recs["set-b"][300002] = record(300009, "01:00,HR,70")
    install(tmp_path / "data" / "physionet2012", blobs(recs), monkeypatch)
    with pytest.raises(ValueError, match=r"set-b\.tar\.gz:set-b/300002\.txt: RecordID 300009 differs"):
        pn.load_physionet(tmp_path / "data", **offline())


def test_fetch_all_includes_physionet(synth, monkeypatch):
    monkeypatch.setattr(data_pkg, "fetch_mnist", lambda *a, **k: {})
    paths = data_pkg.fetch_all(progress=False, data_dir=synth)
    assert sorted(paths) == sorted(f"physionet2012/{n}" for n in pn.SHA256)
    assert all(p.is_file() for p in paths.values())


# --------------------------------------------------------------------------- the real data (mirror)

_MIRROR = Path(os.environ.get("TAYNODE_MIRROR") or REPO.parent / "shared" / "data")
_REAL = [d for d in (REPO / "data", _MIRROR) if all((d / "physionet2012" / n).is_file() for n in pn.SHA256)]
TEN_EMPTY = (140501, 140936, 141264, 142731, 142998, 143656, 145611, 147514, 150309, 150649)


@pytest.fixture(scope="module")
def real():
    if not _REAL:
        pytest.skip(f"PhysioNet 2012 files neither in {REPO / 'data'} nor in the mirror {_MIRROR}")
    return pn.load_physionet(REPO / "data", _REAL[-1], allow_url=False, progress=False)


@pytest.mark.slow
def test_real_counts_and_grid(real):
    """REFERENCES: 4000 + 4000 records, times 00:00-48:00 on a 49-point hourly grid, ten empty records."""
    assert real.info["n_records"] == {"set-a": 4000, "set-b": 4000}
    assert real.info["empty_record_ids"] == TEN_EMPTY
    assert real.train.values.shape[1:] == real.test.values.shape[1:] == (49, 37)
    # the union grid: every hour 0..48 is observed in the training split (and in the test split)
    assert real.train.mask.any(axis=(0, 2)).all() and real.test.mask.any(axis=(0, 2)).all()
    # 80/20 of all 8000 RecordIDs, empty records removed afterwards; no patient in both splits
    ids = np.r_[real.train.record_ids, real.test.record_ids].tolist()
    assert len(set(ids)) == len(ids) == 8000 - 10
    want_train, want_test = expected_split(ids + list(TEN_EMPTY))
    assert len(want_test) == 1600 and len(want_train) == 6400
    assert set(real.test.record_ids.tolist()) == want_test - set(TEN_EMPTY)
    assert set(real.train.record_ids.tolist()) == want_train - set(TEN_EMPTY)


@pytest.mark.slow
def test_real_observed_fraction_and_time_points(real):
    """REFERENCES: 1 / 47 / 49 time points per record, 21.4 % of (time, feature) cells observed."""
    mask = np.concatenate([real.train.mask, real.test.mask]).astype(bool)
    # a record's time points: the hours holding an observation, and hour 0 (admission descriptors)
    points = mask.any(axis=2)
    points[:, 0] = True
    n_points = np.r_[points.sum(axis=1), np.ones(10, dtype=int)]  # the ten empty records: hour 0 only
    assert (n_points.min(), np.median(n_points), n_points.max()) == (1, 47, 49)
    fraction = mask.sum() / (37 * n_points.sum())
    assert fraction == pytest.approx(0.214, abs=0.0005)


@pytest.mark.slow
def test_real_missing_codes_and_implausible_values(real):
    """REFERENCES: Weight -1 in 673 records at 00:00; 41 Temp values below 0; 10 pH values above 14."""
    assert real.info["missing_codes"] == {"Weight": 673}
    assert real.info["implausible"] == real.info["removed"] == {"Temp": 41, "pH": 10}
    assert (real.data_min >= 0).all()
    ph = F["pH"]
    assert real.data_max[ph] <= 14
    # scaled with training statistics: training values lie in [0, 1]
    observed = real.train.mask.astype(bool)
    assert real.train.values[observed].min() >= 0 and real.train.values[observed].max() <= 1


@pytest.mark.skipif(not _REAL or shutil.which("gzip") is None, reason="needs the real files and gzip")
@pytest.mark.slow
def test_real_repacked_tarball_reproduces_the_checksum(tmp_path):
    """A differently packed copy of set-b (shuffled, other metadata, gzip -9) re-packs to the mirror's sha256."""
    src = _REAL[-1] / "physionet2012" / "set-b.tar.gz"
    with tarfile.open(src) as tar:
        recs = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    random.Random(0).shuffle(recs)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, b in recs:
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mtime, info.uname, info.mode = len(b), 1400000000, "physionet", 0o644
            tar.addfile(info, io.BytesIO(b))
    other = tmp_path / "other.tar.gz"
    other.write_bytes(gzip.compress(raw.getvalue(), compresslevel=9))
    assert sha(other.read_bytes()) != pn.SHA256["set-b.tar.gz"]
    out = pn.canonical_tarball(other, tmp_path / "set-b.tar.gz", set_name="set-b")
    assert _fetch.sha256_file(out) == "165765a7e569b390ab9a8a80c3561c0e60e7ccab75d93e7401d70a4158d720d7"


def _raw_values():
    """Every value of every time-varying parameter in the raw archives, read independently of the parser."""
    out: dict[str, list[float]] = {}
    for s in ("set-a", "set-b"):
        with tarfile.open(_REAL[-1] / "physionet2012" / f"{s}.tar.gz") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                for line in tar.extractfile(m).read().decode().splitlines()[1:]:
                    _, param, value = line.split(",")
                    out.setdefault(param, []).append(float(value))
    return {k: np.asarray(v) for k, v in out.items() if k in pn.FEATURES}


@pytest.mark.slow
def test_real_physiological_rule_counts(real):
    """The physiological rule's removed counts against a count on the raw records; -1 codes are not values."""
    if not _REAL:
        pytest.skip("needs the real files")
    phys = pn.load_physionet(REPO / "data", _REAL[-1], implausible="physiological", allow_url=False, progress=False)
    raw = _raw_values()
    want = {}
    for f, (lo, hi) in pn.PHYSIOLOGICAL_RANGES.items():
        v = raw[f][raw[f] != -1]
        if n := int(np.sum((v < lo) | (v > hi))):
            want[f] = n
    assert phys.info["removed"] == want
    assert phys.info["implausible"] == {"Temp": 41, "pH": 10}
    # the zeros that stay under "drop" are gone: Temp 0 °C, Weight 0, pH 0.4
    for f in ("Temp", "Weight", "pH"):
        assert want[f] > real.info["removed"].get(f, 0)
        j = F[f]
        observed = phys.train.mask[:, :, j] > 0
        lo = pn.PHYSIOLOGICAL_RANGES[f][0]
        assert phys.data_min[j] >= lo and phys.train.values[:, :, j][observed].min() == pytest.approx(0.0, abs=1e-12)
    # no record loses its whole series: the same patients in both splits
    np.testing.assert_array_equal(phys.test.record_ids, real.test.record_ids)
    np.testing.assert_array_equal(phys.train.record_ids, real.train.record_ids)
