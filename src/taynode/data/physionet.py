"""PhysioNet/Computing in Cardiology Challenge 2012: fetch, parse, split and scale the ICU time series.

The data: 8000 ICU stays (set A and set B, 4000 records each), one CSV file per record
(`Time,Parameter,Value`, time as `HH:MM` since admission, 00:00-48:00). Licence: Open Data Commons
Attribution v1.0; cite Silva et al., Computing in Cardiology 39:245-248 (2012) and Goldberger et al.,
Circulation 101(23):e215-e220 (2000). See `data/README.md`.

**Fetching.** The four files (`set-a.tar.gz`, `set-b.tar.gz`, `Outcomes-a.txt`, `Outcomes-b.txt`) are
looked for in `<data_dir>/physionet2012/`, then in a mirror directory (`<mirror>/physionet2012/` or
`<mirror>/`, default `$TAYNODE_MIRROR`), then downloaded from `https://physionet.org/files/challenge-2012/
1.0.0/`. Every file is checked against the sha256 in `SHA256` before it is used. The checksummed
tarballs are a deterministic packing of the record files (sorted names, fixed metadata, GNU
`gzip -n -6`); physionet.org packs the same record files differently, so a tarball downloaded from
there is re-packed the same way (`canonical_tarball`, needs GNU `gzip` on `PATH`) and then checked.

**Preprocessing** (the paper's latent-ODE code, minus its defects; `parse_record`):
- Features: the 37 time-varying parameters in `FEATURES` (the original's order). The admission
  descriptors Age, Gender, Height and ICUType are dropped; so is the RecordID line.
- `-1` is the challenge's code for a missing value (Weight at 00:00 in 673 records): such a value is
  not an observation, whatever the feature. The original used it as a weight of -1 kg.
- Implausible values, three rules (`implausible`); a value a rule rejects is treated as unobserved,
  nothing is clamped, and `info["removed"]` counts the rejected values per feature:
  - `"drop"` (the loader's default): a value outside its feature's physically *possible* range
    `VALID_RANGES` (below 0 for every feature; pH above 14; FiO2 above 1; SaO2 and HCT above 100 %).
    In the challenge data it drops 41 negative Temp values and 10 pH values above 14 (e.g. 735);
    zeros (Temp 0 °C, pH 0.4, Weight 0, HR 0, ...) are possible numbers and stay.
  - `"physiological"`: a value outside `PHYSIOLOGICAL_RANGES`, generous ranges of values a
    clinician would accept as survivable (each with its reason below); they lie inside
    `VALID_RANGES`, so this rule removes everything `"drop"` removes and more (Temp 0 °C, Weight 0,
    pH 0.4, blood pressures of 0 from a flushed or disconnected line, ...).
  - `"keep"`: every value is used, as the original did.
  Whatever the rule, `info["implausible"]` counts the values outside `VALID_RANGES`.
- Time is quantised to slots of `quantization_minutes` (60: hours): a time goes to the nearest slot,
  and a time exactly half-way goes to the even slot (Python's `round`, as in the original). Values of
  one feature that fall in one slot are averaged. The grid is every slot of the 48-hour window,
  hours 0..48 at 60 minutes (49 points), divided by 48 h so that `times` runs over [0, 1]; in the
  challenge data every hour of the grid is observed.
- Records with no time series are excluded from both splits and listed in `info["empty_record_ids"]`:
  a record is empty when it has no observation besides the admission descriptors, which the
  challenge gives at 00:00 as Age, Gender, Height, ICUType and Weight (ten records; one of them,
  143656, has a valid Weight, the others none). Weight at 00:00 is otherwise an ordinary observation.
- Split (`split_record_ids`): every RecordID of both sets is ranked by the sha256 of
  `"physionet2012:<seed>:<RecordID>"`; the first `round(test_fraction * n)` form the test split. The
  rule depends on neither file order nor library versions; a patient is in exactly one split. Empty
  records are removed after splitting, so they do not move any other record.
- Scaling: `(x - min) / max` per feature (the original's formula, not `(x - min) / (max - min)`), with
  `min` and `max` over the observed cells of the **training** split only (the original used all
  8000 records); a `max` of 0 becomes 1, and a feature never observed in training gets min 0, max 1.
  Test values may therefore lie outside [0, 1]. Unobserved cells are 0 in `values` and 0 in `mask`.
- The task is interpolation: the observed cells are both the model's input and its targets.

**Cache.** The parsed grid (before splitting and scaling, which take well under a second) is written
to `<data_dir>/physionet2012/physionet2012-taynode-derived-<key>.npz`, a derived copy under its own
name as the licence asks, with an attribution note inside. `<key>` is a sha256 of the raw files'
checksums and the parsing settings (`quantization_minutes`, `implausible`, the ranges, the format
version), so a change of either makes a new file. Measured on the project's 2-core machine (shared
with other work): the first call (copy from the mirror, checksums, parsing the 8000 records) took
10-16 s; the cache file is 9.1 MB; later calls (checksums, cache, split, scaling) take about 1 s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._fetch import (
    ChecksumError,
    FetchError,
    Source,
    SourceUnavailable,
    atomic_write,
    default_data_dir,
    default_mirror,
    ensure_files,
    mirror_source,
    skipped_source,
    url_source,
)

__all__ = [
    "load_physionet",
    "fetch_physionet",
    "provenance",
    "parse_record",
    "Record",
    "split_record_ids",
    "canonical_tarball",
    "PhysioNet",
    "PhysioNetSplit",
    "FEATURES",
    "STATIC",
    "VALID_RANGES",
    "PHYSIOLOGICAL_RANGES",
    "IMPLAUSIBLE_CHOICES",
    "SHA256",
    "URL_BASE",
    "ChecksumError",
    "FetchError",
]

SUBDIR = "physionet2012"
URL_BASE = "https://physionet.org/files/challenge-2012/1.0.0"
SETS = ("set-a", "set-b")
OUTCOMES = {"set-a": "Outcomes-a.txt", "set-b": "Outcomes-b.txt"}

#: file name → sha256 (the deterministic tarballs of the mirror; the Outcomes files verbatim)
SHA256 = {
    "set-a.tar.gz": "dd6292adab790a67265cb95704db27187a2acbeec88ec39b98f5e9301ea4a7d2",
    "set-b.tar.gz": "165765a7e569b390ab9a8a80c3561c0e60e7ccab75d93e7401d70a4158d720d7",
    "Outcomes-a.txt": "2613ea60ccda29f87571a7d6b09ad130858a8ccd66325bd073365925026883c2",
    "Outcomes-b.txt": "1305f29734da374a809483229a99f33a9230aa8d4fa74b1a2d6ad788136423d5",
}

#: admission descriptors, given once at 00:00; dropped
STATIC = ("Age", "Gender", "Height", "ICUType")

#: the 37 time-varying features, in the order of the original code
FEATURES = (
    "Weight", "Albumin", "ALP", "ALT", "AST", "Bilirubin", "BUN", "Cholesterol", "Creatinine", "DiasABP",
    "FiO2", "GCS", "Glucose", "HCO3", "HCT", "HR", "K", "Lactate", "Mg", "MAP", "MechVent", "Na",
    "NIDiasABP", "NIMAP", "NISysABP", "PaCO2", "PaO2", "pH", "Platelets", "RespRate", "SaO2", "SysABP",
    "Temp", "TroponinI", "TroponinT", "Urine", "WBC",
)  # fmt: skip

#: the challenge's missing-value code
MISSING_CODE = -1.0

#: physically possible range (inclusive) of each feature; a value outside it is implausible
VALID_RANGES: dict[str, tuple[float, float]] = {
    name: (0.0, {"pH": 14.0, "FiO2": 1.0, "SaO2": 100.0, "HCT": 100.0}.get(name, math.inf)) for name in FEATURES
}

#: Generous survivable range (inclusive) of each feature, in the challenge's units; the rule
#: `implausible="physiological"` treats a value outside it as unobserved. Each bound, and why:
#:
#: - Weight 20-350 kg: adults (the challenge's patients are 15 or older); 0-5 kg are entry errors.
#: - Albumin 0.5-7 g/dL: below 1 and above 6 are rare even in severe illness.
#: - ALP 1-5000 IU/L: obstructive and infiltrative liver disease reach a few thousand.
#: - ALT 1-25000 IU/L and AST 1-25000 IU/L: ischaemic hepatitis and acute liver failure reach the ten thousands.
#: - Bilirubin 0-80 mg/dL: 0 is a result below the assay's limit; the worst cholestasis stays below 80.
#: - BUN 0-300 mg/dL: 0 is below the assay's limit; untreated uraemia stays below 300.
#: - Cholesterol 20-1000 mg/dL: liver failure gives the lowest, familial hypercholesterolaemia the highest.
#: - Creatinine 0.1-30 mg/dL: very low muscle mass to end-stage renal failure without dialysis.
#: - DiasABP 10-200 mmHg: a diastolic pressure below 10 is circulatory arrest, 0 a zeroed or flushed line.
#: - FiO2 0.21-1: room air to pure oxygen (a fraction).
#: - GCS 3-15: the range of the Glasgow Coma Scale.
#: - Glucose 5-2000 mg/dL: profound hypoglycaemia to hyperosmolar states above 1000.
#: - HCO3 2-60 mmol/L: severe metabolic acidosis to severe metabolic alkalosis.
#: - HCT 5-75 %: exsanguination to polycythaemia.
#: - HR 20-300 bpm: extreme bradycardia to 1:1 atrial flutter; below 20 (0 included) is arrest or a lost lead.
#: - K 1-15 mmol/L: generous around the extremes at which the heart stops; higher readings are haemolysed samples.
#: - Lactate 0.1-40 mmol/L: a generous bracket around the few tens seen in profound shock.
#: - Mg 0.3-12 (values with a median near 2, as mg/dL): magnesium of about 12-15 mg/dL stops the heart.
#: - MAP 20-250 mmHg: a mean pressure below 20 is arrest; above 250 needs a systolic pressure beyond 300.
#: - MechVent 0-1: a flag.
#: - Na 95-200 mmol/L: generous around the extremes of hypo- and hypernatraemia seen in intensive care.
#: - NIDiasABP 10-200, NIMAP 20-250, NISysABP 20-300 mmHg: as their invasive counterparts.
#: - PaCO2 5-200 mmHg: extreme hyperventilation to survived hypercapnia well above 100.
#: - PaO2 10-800 mmHg: severe hypoxaemia to pure oxygen at sea level (about 700).
#: - pH 6.5-8.0: wider than the range usually called compatible with life (about 6.8-7.8).
#: - Platelets 1-3000 (10^3/µL): profound thrombocytopenia to essential thrombocythaemia.
#: - RespRate 1-100 /min: 0 is apnoea or a disconnected sensor; 100 is generous for panting.
#: - SaO2 20-100 %: an arterial saturation below 20 % is not compatible with life for long.
#: - SysABP 20-300 mmHg: a systolic pressure below 20 is arrest; 300 is the top of the monitors' range.
#: - Temp 20-45 °C: deep accidental hypothermia near 20 °C and heat stroke near 45 °C can be survived;
#:   values below 20 (0 °C, 0.4-3.6 °C, negative values) are recording errors.
#: - TroponinI 0-500 µg/L and TroponinT 0-100 µg/L: 0 is below the assay's limit; large infarcts reach the tens.
#: - Urine 0-10000 mL: one charted output; 0 is anuria (possible), ten litres in one entry is not.
#: - WBC 0-1000 (10^3/µL): aplasia to hyperleukocytic leukaemia (several hundred).
PHYSIOLOGICAL_RANGES: dict[str, tuple[float, float]] = {
    "Weight": (20.0, 350.0), "Albumin": (0.5, 7.0), "ALP": (1.0, 5000.0), "ALT": (1.0, 25000.0),
    "AST": (1.0, 25000.0), "Bilirubin": (0.0, 80.0), "BUN": (0.0, 300.0), "Cholesterol": (20.0, 1000.0),
    "Creatinine": (0.1, 30.0), "DiasABP": (10.0, 200.0), "FiO2": (0.21, 1.0), "GCS": (3.0, 15.0),
    "Glucose": (5.0, 2000.0), "HCO3": (2.0, 60.0), "HCT": (5.0, 75.0), "HR": (20.0, 300.0), "K": (1.0, 15.0),
    "Lactate": (0.1, 40.0), "Mg": (0.3, 12.0), "MAP": (20.0, 250.0), "MechVent": (0.0, 1.0), "Na": (95.0, 200.0),
    "NIDiasABP": (10.0, 200.0), "NIMAP": (20.0, 250.0), "NISysABP": (20.0, 300.0), "PaCO2": (5.0, 200.0),
    "PaO2": (10.0, 800.0), "pH": (6.5, 8.0), "Platelets": (1.0, 3000.0), "RespRate": (1.0, 100.0),
    "SaO2": (20.0, 100.0), "SysABP": (20.0, 300.0), "Temp": (20.0, 45.0), "TroponinI": (0.0, 500.0),
    "TroponinT": (0.0, 100.0), "Urine": (0.0, 10000.0), "WBC": (0.0, 1000.0),
}  # fmt: skip

WINDOW_MINUTES = 48 * 60
IMPLAUSIBLE_CHOICES = ("drop", "physiological", "keep")

_FORMAT = 2  # version of the parsing rules and the cache layout; part of the cache key
_CANONICAL_MTIME = 1325376000  # 2012-01-01 00:00 UTC, the mtime of every member of the checksummed tarballs
_MEMBER = re.compile(r"^(?:\./)?(set-[a-z])/(\d+)\.txt$")
_FEATURE_INDEX = {name: i for i, name in enumerate(FEATURES)}
_LOW = np.array([VALID_RANGES[f][0] for f in FEATURES])
_HIGH = np.array([VALID_RANGES[f][1] for f in FEATURES])
#: per rule, the (low, high) bounds of the values it keeps
_RULE_BOUNDS = {
    "drop": (_LOW, _HIGH),
    "physiological": tuple(np.array([PHYSIOLOGICAL_RANGES[f][i] for f in FEATURES]) for i in (0, 1)),
    "keep": (np.full(len(FEATURES), -np.inf), np.full(len(FEATURES), np.inf)),
}
_FIX = "delete it and fetch again (taynode data fetch)"
_ATTRIBUTION = (
    "Derived from the PhysioNet/Computing in Cardiology Challenge 2012 data (set-a, set-b), "
    "Open Data Commons Attribution License v1.0. Silva I, Moody G, Scott DJ, Celi LA, Mark RG. "
    "Predicting In-Hospital Mortality of ICU Patients: The PhysioNet/Computing in Cardiology Challenge 2012. "
    "Computing in Cardiology 2012;39:245-248. Goldberger AL et al., Circulation 101(23):e215-e220 (2000). "
    "Processed by taynode.data.physionet (1-hour or other quantisation, 37 time-varying features); "
    "not the original files."
)


# --------------------------------------------------------------------------- returned structure


@dataclasses.dataclass(frozen=True)
class PhysioNetSplit:
    """One split of the processed data; `n` records, `T` grid points, `D = 37` features.

    - `values`: `(n, T, D)` float64, scaled `(x - min) / max` with the training statistics; 0 where
      unobserved.
    - `mask`: `(n, T, D)` float64, 1 where observed, else 0.
    - `times`: `(T,)` float64, the grid in [0, 1] (hours / 48); the same for both splits.
    - `record_ids`: `(n,)` int64, ascending; row `i` of `values` is record `record_ids[i]`.
    - `in_hospital_death`: `(n,)` int64, 0 or 1, from the Outcomes files (not used by the loader).
    """

    values: np.ndarray
    mask: np.ndarray
    times: np.ndarray
    record_ids: np.ndarray
    in_hospital_death: np.ndarray

    def __len__(self) -> int:
        return len(self.record_ids)


@dataclasses.dataclass(frozen=True)
class PhysioNet:
    """What `load_physionet` returns.

    - `train`, `test`: `PhysioNetSplit`s (disjoint RecordIDs).
    - `features`: the `D = 37` feature names, in column order.
    - `data_min`, `data_max`: `(D,)` float64, the scaling statistics from the training split
      (`data_max` after replacing 0 by 1): `values = (x - data_min) / data_max`.
    - `info`: a dict with `empty_record_ids` (excluded records, ascending), `missing_codes`,
      `implausible` and `removed` (per feature, how many raw values were `-1` / outside `VALID_RANGES`
      / removed by the implausible-value rule; features with none are left out), the settings
      (`quantization_minutes`, `implausible_rule`, `seed`, `test_fraction`), `n_records` per set,
      `raw_sha256` and `cache` (the cache path or None).
    """

    train: PhysioNetSplit
    test: PhysioNetSplit
    features: tuple[str, ...]
    data_min: np.ndarray
    data_max: np.ndarray
    info: dict


@dataclasses.dataclass(frozen=True)
class _Parsed:
    """Every record on the grid, unscaled and unsplit (what the cache holds); records by ascending ID."""

    record_ids: np.ndarray  # (N,) int64
    set_index: np.ndarray  # (N,) int64, index into SETS
    values: np.ndarray  # (N, T, D) float64 slot means, 0 where unobserved
    mask: np.ndarray  # (N, T, D) bool
    death: np.ndarray  # (N,) int64
    missing_codes: np.ndarray  # (D,) int64
    implausible: np.ndarray  # (D,) int64
    removed: np.ndarray  # (D,) int64
    has_series: np.ndarray  # (N,) bool, see Record.has_series


# --------------------------------------------------------------------------- argument checks


def _check_args(*, seed, test_fraction, quantization_minutes, implausible) -> None:
    """The one home of `load_physionet`'s argument checks: one-line ValueErrors naming the argument."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    ok = not isinstance(test_fraction, bool) and isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1
    if not ok:
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1 (e.g. 0.2), got {test_fraction!r}")
    _check_quantization(quantization_minutes)
    if implausible not in IMPLAUSIBLE_CHOICES:
        raise ValueError(f"implausible must be one of {IMPLAUSIBLE_CHOICES}, got {implausible!r}")


def _check_quantization(q) -> None:
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 1 or WINDOW_MINUTES % q:
        raise ValueError(
            f"quantization_minutes must be an int dividing {WINDOW_MINUTES} (48 h in minutes), e.g. 60 or 6; got {q!r}"
        )


# --------------------------------------------------------------------------- one record


def _slot(minutes: int, q: int) -> int:
    """Nearest slot of width `q` minutes; a time half-way between two slots goes to the even one."""
    k, r = divmod(minutes, q)
    if 2 * r > q or (2 * r == q and k % 2 == 1):
        k += 1
    return k


class Record(NamedTuple):
    """One record on the slot grid (what `parse_record` returns); `T` slots, `D = 37` features.

    - `record_id`: the RecordID line's value.
    - `values`: `(T, D)` float64, the mean of the values in each slot, 0 where unobserved.
    - `mask`: `(T, D)` bool, True where observed.
    - `missing_codes`: `(D,)` int64, how many values were the missing code `-1` (never observations).
    - `implausible`: `(D,)` int64, how many values lay outside `VALID_RANGES` (whatever the rule).
    - `removed`: `(D,)` int64, how many values the implausible-value rule treated as unobserved.
    - `has_series`: whether any observation is more than an admission descriptor, i.e. other than
      Weight at 00:00 (the challenge gives Weight at 00:00 with Age, Gender, Height and ICUType).
    """

    record_id: int
    values: np.ndarray
    mask: np.ndarray
    missing_codes: np.ndarray
    implausible: np.ndarray
    removed: np.ndarray
    has_series: bool


def parse_record(
    text: str, *, name: str = "<record>", quantization_minutes: int = 60, implausible: str = "drop"
) -> Record:
    """Parse one challenge record file onto the slot grid.

    **Arguments**
    - `text`: the file's content (`Time,Parameter,Value` header, then one observation a line).
    - `name`: how to name the record in errors (e.g. `"set-a.tar.gz:set-a/132539.txt"`).
    - `quantization_minutes`, `implausible`: as for `load_physionet`.

    **Returns** a `Record` with `T = 2880 / quantization_minutes + 1` slots.

    **Raises** `ValueError` naming the record (and the line) for a wrong header, a malformed line, an
    unknown parameter, a time outside 00:00-48:00, a non-finite value, or a missing or repeated RecordID.
    """
    _check_quantization(quantization_minutes)
    if implausible not in IMPLAUSIBLE_CHOICES:
        raise ValueError(f"implausible must be one of {IMPLAUSIBLE_CHOICES}, got {implausible!r}")
    q = quantization_minutes
    n_slots = WINDOW_MINUTES // q + 1
    sums = np.zeros((n_slots, len(FEATURES)))
    counts = np.zeros((n_slots, len(FEATURES)), dtype=np.int64)
    missing = np.zeros(len(FEATURES), dtype=np.int64)
    bad = np.zeros(len(FEATURES), dtype=np.int64)
    removed = np.zeros(len(FEATURES), dtype=np.int64)
    low, high = _RULE_BOUNDS[implausible]
    record_id = None
    has_series = False
    lines = text.splitlines()
    if not lines or lines[0].strip() != "Time,Parameter,Value":
        got = lines[0][:40] if lines else "an empty file"
        raise ValueError(f"{name}: expected the header 'Time,Parameter,Value', got {got!r}")
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split(",")
        try:
            if len(parts) != 3:
                raise ValueError("expected Time,Parameter,Value")
            hh, mm = parts[0].split(":")
            minutes = int(hh) * 60 + int(mm)
            value = float(parts[2])
        except ValueError as exc:
            raise ValueError(f"{name} line {lineno}: cannot parse {line!r} ({exc})") from None
        param = parts[1].strip()
        if not 0 <= minutes <= WINDOW_MINUTES or not 0 <= int(mm) < 60:
            raise ValueError(f"{name} line {lineno}: time {parts[0]!r} is outside 00:00-48:00")
        if not math.isfinite(value):
            raise ValueError(f"{name} line {lineno}: value {parts[2]!r} is not a finite number")
        if param == "RecordID":
            if record_id is not None:
                raise ValueError(f"{name} line {lineno}: a second RecordID line")
            record_id = int(value)
            continue
        if param in STATIC:
            continue
        j = _FEATURE_INDEX.get(param)
        if j is None:
            raise ValueError(f"{name} line {lineno}: unknown parameter {param!r}")
        if value == MISSING_CODE:
            missing[j] += 1
            continue
        if not _LOW[j] <= value <= _HIGH[j]:
            bad[j] += 1
        if not low[j] <= value <= high[j]:
            removed[j] += 1
            continue
        k = _slot(minutes, q)
        sums[k, j] += value
        counts[k, j] += 1
        has_series = has_series or not (param == "Weight" and minutes == 0)
    if record_id is None:
        raise ValueError(f"{name}: no RecordID line")
    mask = counts > 0
    values = np.where(mask, sums / np.maximum(counts, 1), 0.0)
    return Record(record_id, values, mask, missing, bad, removed, has_series)


# --------------------------------------------------------------------------- archives


def _iter_members(path: Path) -> Iterator[tuple[str, int, bytes]]:
    """Yield `(set name, RecordID from the file name, content)` of each record file in a tarball."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            while True:
                member = tar.next()
                if member is None:
                    break
                m = _MEMBER.match(member.name)
                if not member.isfile() or m is None:
                    continue
                f = tar.extractfile(member)
                data = f.read() if f is not None else b""
                yield m.group(1), int(m.group(2)), data
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"{path}: truncated or corrupt gzip tar archive ({reason}); {_FIX}") from None


def canonical_tarball(src: str | os.PathLike, dest: str | os.PathLike, *, set_name: str) -> Path:
    """Re-pack a challenge tarball's record files in the layout whose sha256 `SHA256` lists.

    The layout: GNU tar holding the directory `<set_name>/` then `<set_name>/<RecordID>.txt` in
    name order, every member with mtime 2012-01-01 00:00 UTC, uid and gid 0, no owner names, modes
    0775 / 0664; compressed by GNU `gzip -n -6`. Only the record files' names and contents matter.

    **Arguments**
    - `src`: a gzip tarball holding `<set_name>/<RecordID>.txt` (a leading `./` is allowed).
    - `dest`: the file to write (atomically).
    - `set_name`: `"set-a"` or `"set-b"`.

    **Returns** `dest` as a `Path`.

    **Raises** `ValueError` naming `src` if it is not a complete gzip tarball or holds no record of
    `set_name`; `RuntimeError` if `gzip` is missing or fails.
    """
    src, dest = Path(src), Path(dest)
    records = {rid: data for set_, rid, data in _iter_members(src) if set_ == set_name}
    if not records:
        raise ValueError(f"{src}: no {set_name}/<RecordID>.txt files in the archive")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        entries = [(set_name, None)] + [(f"{set_name}/{rid}.txt", records[rid]) for rid in records]
        for name, data in sorted(entries, key=lambda e: e[0]):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = _CANONICAL_MTIME, 0, 0, "", ""
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o775
            else:
                info.mode, info.size = 0o664, len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    exe = shutil.which("gzip")
    if exe is None:
        raise RuntimeError("`gzip` not found on PATH (GNU gzip is needed to re-pack the tarball)")
    proc = subprocess.run([exe, "-n", "-6", "-c"], input=buf.getvalue(), capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"`gzip -n -6` exited with {proc.returncode}: {err}")
    return atomic_write(dest, proc.stdout)


def _read_outcomes(path: Path) -> dict[int, int]:
    """`{RecordID: In-hospital_death}` from an Outcomes file."""
    lines = path.read_text().splitlines()
    header = lines[0].split(",") if lines else []
    if "RecordID" not in header or "In-hospital_death" not in header:
        raise ValueError(f"{path}: expected a header with RecordID and In-hospital_death; {_FIX}")
    i, j = header.index("RecordID"), header.index("In-hospital_death")
    out = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split(",")
        try:
            out[int(parts[i])] = int(parts[j])
        except (ValueError, IndexError):
            raise ValueError(f"{path} line {lineno}: cannot parse {line!r}; {_FIX}") from None
    return out


# --------------------------------------------------------------------------- fetching


def _public_source(progress: bool) -> Source:
    """physionet.org: Outcomes files as they are, tarballs re-packed by `canonical_tarball`."""
    inner = url_source(URL_BASE, progress=progress)

    def fetch(names, staging):
        if any(n.endswith(".tar.gz") for n in names) and shutil.which("gzip") is None:
            raise SourceUnavailable("skipped, `gzip` not found on PATH (needed to re-pack physionet.org's tarballs)")
        out = {}
        for name, path in inner.fetch(names, staging).items():
            if name.endswith(".tar.gz"):
                path = canonical_tarball(path, Path(staging) / name, set_name=name.removesuffix(".tar.gz"))
            out[name] = path
        return out

    return Source(inner.label, fetch)


def fetch_physionet(
    data_dir: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    *,
    allow_url: bool = True,
    progress: bool = True,
) -> dict[str, Path]:
    """Make sure the four challenge files are in `<data_dir>/physionet2012/` with the right sha256.

    **Arguments** as for `load_physionet`.

    **Returns** `{file name: path}` for `set-a.tar.gz`, `set-b.tar.gz`, `Outcomes-a.txt`, `Outcomes-b.txt`.

    **Raises**
    - `ChecksumError` (a `ValueError`, one line) naming a file already in the data directory whose
      sha256 is wrong (a truncated download, say); it is never overwritten: delete it.
    - `FetchError` (a `RuntimeError`) listing every source tried and why it failed.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if mirror is None:
        mirror = default_mirror()
    dest = root / SUBDIR
    sources = [
        mirror_source(mirror, SUBDIR),
        _public_source(progress) if allow_url else skipped_source(f"url {URL_BASE}/", "skipped, allow_url=False"),
    ]
    fix = (
        f"copy the four files ({', '.join(SHA256)}; sha256 in data/README.md) into {dest} or into "
        f"<mirror>/{SUBDIR}/ with TAYNODE_MIRROR set, or allow network access to physionet.org"
    )
    return ensure_files(dest, SHA256, sources, what="PhysioNet 2012", fix=fix, progress=progress)


# --------------------------------------------------------------------------- parsing every record, cache


def _cache_key(quantization_minutes: int, implausible: str) -> str:
    settings = {
        "format": _FORMAT,
        "raw_sha256": SHA256,
        "features": FEATURES,
        "quantization_minutes": int(quantization_minutes),
        "implausible": implausible,
        "valid_ranges": {k: [lo, str(hi)] for k, (lo, hi) in VALID_RANGES.items()},
        "physiological_ranges": {k: [lo, hi] for k, (lo, hi) in PHYSIOLOGICAL_RANGES.items()},
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _parse_all(paths: dict[str, Path], quantization_minutes: int, implausible: str, progress: bool) -> _Parsed:
    from tqdm.auto import tqdm

    ids, sets, vals, masks, deaths, series = [], [], [], [], [], []
    missing = np.zeros(len(FEATURES), dtype=np.int64)
    bad = np.zeros(len(FEATURES), dtype=np.int64)
    removed = np.zeros(len(FEATURES), dtype=np.int64)
    for s, set_name in enumerate(SETS):
        outcomes = _read_outcomes(paths[OUTCOMES[set_name]])
        tar_path = paths[f"{set_name}.tar.gz"]
        seen: set[int] = set()
        bar = tqdm(total=len(outcomes), desc=f"parsing {set_name}", unit="record", disable=not progress,
                   file=sys.stderr, leave=False)
        with bar:
            for member_set, file_id, data in _iter_members(tar_path):
                name = f"{tar_path.name}:{member_set}/{file_id}.txt"
                if member_set != set_name:
                    raise ValueError(f"{name}: a {member_set} record in the {set_name} archive; {_FIX}")
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ValueError(f"{name}: not UTF-8 text ({exc.reason})") from None
                rec = parse_record(text, name=name, quantization_minutes=quantization_minutes, implausible=implausible)
                rid = rec.record_id
                if rid != file_id:
                    raise ValueError(f"{name}: RecordID {rid} differs from the file name")
                if rid in seen:
                    raise ValueError(f"{name}: RecordID {rid} appears twice")
                seen.add(rid)
                ids.append(rid)
                sets.append(s)
                vals.append(rec.values)
                masks.append(rec.mask)
                deaths.append(outcomes.get(rid, -1))
                series.append(rec.has_series)
                missing += rec.missing_codes
                bad += rec.implausible
                removed += rec.removed
                bar.update()
        if seen != set(outcomes):
            only_tar, only_out = sorted(seen - set(outcomes)), sorted(set(outcomes) - seen)
            raise ValueError(
                f"{tar_path} and {paths[OUTCOMES[set_name]]} disagree: {len(only_tar)} records only in the "
                f"archive (e.g. {only_tar[:3]}), {len(only_out)} only in the Outcomes file (e.g. {only_out[:3]}); "
                f"{_FIX}"
            )
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ValueError(f"RecordIDs {dup} appear in both {SETS[0]} and {SETS[1]}; {_FIX}")
    order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
    return _Parsed(
        record_ids=np.asarray(ids, dtype=np.int64)[order],
        set_index=np.asarray(sets, dtype=np.int64)[order],
        values=np.stack(vals)[order],
        mask=np.stack(masks)[order],
        death=np.asarray(deaths, dtype=np.int64)[order],
        missing_codes=missing,
        implausible=bad,
        removed=removed,
        has_series=np.asarray(series, dtype=bool)[order],
    )


def _save_cache(path: Path, parsed: _Parsed, key: str) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, key=np.array(key), attribution=np.array(_ATTRIBUTION), **dataclasses.asdict(parsed))
    atomic_write(path, buf.getvalue())


def _load_cache(path: Path, key: str) -> _Parsed:
    fix = "it is a derived file: delete it and it is rebuilt"
    try:
        with np.load(path, allow_pickle=False) as z:
            stored_key = str(z["key"])
            parsed = _Parsed(**{f.name: z[f.name] for f in dataclasses.fields(_Parsed)})
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is the same error
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        raise ValueError(f"{path}: unreadable cache ({reason}); {fix}") from None
    if stored_key != key:
        raise ValueError(f"{path}: cache key {stored_key[:16]} differs from its name's {key[:16]}; {fix}")
    return parsed


def provenance(
    *, seed: int = 0, test_fraction: float = 0.2, quantization_minutes: int = 60, implausible: str = "drop"
) -> dict:
    """What `load_physionet` loads with these arguments (for a run record's `data` field); reads no file.

    **Arguments** as for `load_physionet`.

    **Returns** a dict:
    - `source`: the challenge's data, sets A and B.
    - `files`: `{file name: sha256}` of the four raw files, the pinned `SHA256` that `fetch_physionet`
      verifies them against.
    - `cache_key`: the full sha256 key of the parsed grid (its cache file carries the first 16 hex
      digits): it covers the raw files' checksums, the features, both range tables, the parsing
      settings and the format version.
    - `settings`: `split_seed` (the `seed` argument), `test_fraction`, `quantization_minutes`,
      `implausible` (the rule) and `implausible_ranges`, the bounds the rule keeps values within
      (`{feature: [low, high]}`, `high` None where there is none; None for `"keep"`).

    **Raises** `ValueError` (one line) naming a bad argument, as `load_physionet`.
    """
    _check_args(
        seed=seed, test_fraction=test_fraction, quantization_minutes=quantization_minutes, implausible=implausible
    )
    ranges = {"drop": VALID_RANGES, "physiological": PHYSIOLOGICAL_RANGES, "keep": None}[implausible]
    return {
        "source": "PhysioNet/Computing in Cardiology Challenge 2012 v1.0.0, sets A and B",
        "files": dict(SHA256),
        "cache_key": _cache_key(quantization_minutes, implausible),
        "settings": {
            "split_seed": int(seed),
            "test_fraction": float(test_fraction),
            "quantization_minutes": int(quantization_minutes),
            "implausible": implausible,
            "implausible_ranges": None if ranges is None else {
                name: [lo, None if math.isinf(hi) else hi] for name, (lo, hi) in ranges.items()
            },
        },
    }


# --------------------------------------------------------------------------- split and scale


def split_record_ids(record_ids, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The train/test split rule: rank RecordIDs by sha256 of `"physionet2012:<seed>:<RecordID>"`.

    The first `round(test_fraction * n)` RecordIDs in that order form the test split, the rest the
    training split. Neither the order of `record_ids` nor any library version changes the result.

    **Arguments**
    - `record_ids`: integer RecordIDs (distinct).
    - `test_fraction`: in (0, 1).
    - `seed`: an int >= 0; another seed gives another split.

    **Returns** `(train_ids, test_ids)`, each an ascending int64 array.

    **Raises** `ValueError` naming a bad argument, repeated RecordIDs, or a split left empty.
    """
    _check_args(seed=seed, test_fraction=test_fraction, quantization_minutes=60, implausible="drop")
    ids = np.asarray(record_ids, dtype=np.int64).ravel()
    if len(np.unique(ids)) != len(ids):
        raise ValueError("record_ids must be distinct")
    n_test = int(round(test_fraction * len(ids)))
    if n_test == 0 or n_test == len(ids):
        raise ValueError(
            f"test_fraction={test_fraction} leaves a split empty for {len(ids)} records; "
            "choose a test_fraction giving each split at least one record"
        )
    ranked = sorted(ids.tolist(), key=lambda r: hashlib.sha256(f"physionet2012:{int(seed)}:{r}".encode()).digest())
    test = np.sort(np.asarray(ranked[:n_test], dtype=np.int64))
    train = np.sort(np.asarray(ranked[n_test:], dtype=np.int64))
    return train, test


def _training_statistics(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature min and max over observed training cells; a max of 0 becomes 1, unobserved → (0, 1)."""
    observed = mask.any(axis=(0, 1))
    lo = np.where(observed, np.where(mask, values, np.inf).min(axis=(0, 1)), 0.0)
    hi = np.where(observed, np.where(mask, values, -np.inf).max(axis=(0, 1)), 1.0)
    return lo, np.where(hi == 0, 1.0, hi)


def _make_split(parsed: _Parsed, rows: np.ndarray, times, lo, hi) -> PhysioNetSplit:
    mask = parsed.mask[rows]
    values = np.where(mask, (parsed.values[rows] - lo) / hi, 0.0)
    return PhysioNetSplit(
        values=values,
        mask=mask.astype(np.float64),
        times=times,
        record_ids=parsed.record_ids[rows],
        in_hospital_death=parsed.death[rows],
    )


# --------------------------------------------------------------------------- entry point


def load_physionet(
    data_dir: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    quantization_minutes: int = 60,
    implausible: str = "drop",
    cache: bool = True,
    allow_url: bool = True,
    progress: bool = True,
) -> PhysioNet:
    """Load PhysioNet 2012 (sets A and B) as scaled, masked arrays on a common time grid, split 80/20.

    **Arguments**
    - `data_dir`: root of the data cache; files live in `<data_dir>/physionet2012/`. Default:
      `$TAYNODE_DATA`, else `<repo root>/data`.
    - `mirror`: a directory holding the files under `<mirror>/physionet2012/` or directly. Default:
      `$TAYNODE_MIRROR` (none if unset or empty).
    - `seed`: int >= 0 choosing the split (`split_record_ids`).
    - `test_fraction`: share of the RecordIDs in the test split, in (0, 1).
    - `quantization_minutes`: slot width, an int dividing 2880; 60 gives the 49-point hourly grid.
    - `implausible`: the rule for implausible values (see the module docstring): `"drop"` (default)
      treats values outside `VALID_RANGES` as unobserved, `"physiological"` values outside
      `PHYSIOLOGICAL_RANGES`; `"keep"` uses every value (the original's behaviour). `-1` codes are
      missing either way. The training statistics are taken after the rule.
    - `cache`: read and write the parsed grid in `<data_dir>/physionet2012/` (see the module docstring).
    - `allow_url`: may download from physionet.org. `progress`: fetch messages and a parsing bar on stderr.

    **Returns** a `PhysioNet` (frozen dataclass): `.train` and `.test` (`PhysioNetSplit`: `values`,
    `mask` `(n, T, D)`, `times` `(T,)`, `record_ids` `(n,)`, `in_hospital_death` `(n,)`), `.features`,
    `.data_min`, `.data_max`, `.info`.

    **Raises**
    - `ValueError` (one line) naming a bad argument and the fix; naming a file that is truncated or
      malformed (`ChecksumError`, a `ValueError`, for a wrong sha256 in the data directory).
    - `FetchError` (a `RuntimeError`) listing every source tried when the files cannot be obtained.
    """
    _check_args(
        seed=seed, test_fraction=test_fraction, quantization_minutes=quantization_minutes, implausible=implausible
    )
    paths = fetch_physionet(data_dir, mirror, allow_url=allow_url, progress=progress)

    # Parse, or read the parsed grid from the cache
    key = _cache_key(quantization_minutes, implausible)
    cache_path = paths["set-a.tar.gz"].parent / f"physionet2012-taynode-derived-{key[:16]}.npz"
    if cache and cache_path.is_file():
        parsed = _load_cache(cache_path, key)
    else:
        parsed = _parse_all(paths, quantization_minutes, implausible, progress)
        if cache:
            _save_cache(cache_path, parsed, key)

    # Split by RecordID; drop records without any observation
    _, test_ids = split_record_ids(parsed.record_ids, test_fraction, seed)
    in_test = np.isin(parsed.record_ids, test_ids)
    nonempty = parsed.has_series
    train_rows, test_rows = np.flatnonzero(~in_test & nonempty), np.flatnonzero(in_test & nonempty)

    # Scale with the training statistics
    lo, hi = _training_statistics(parsed.values[train_rows], parsed.mask[train_rows])
    times = np.arange(parsed.values.shape[1], dtype=np.float64) * quantization_minutes / WINDOW_MINUTES
    info = {
        "empty_record_ids": tuple(int(r) for r in parsed.record_ids[~nonempty]),
        "missing_codes": {f: int(c) for f, c in zip(FEATURES, parsed.missing_codes) if c},
        "implausible": {f: int(c) for f, c in zip(FEATURES, parsed.implausible) if c},
        "removed": {f: int(c) for f, c in zip(FEATURES, parsed.removed) if c},
        "implausible_rule": implausible,
        "quantization_minutes": int(quantization_minutes),
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "n_records": {s: int(np.sum(parsed.set_index == i)) for i, s in enumerate(SETS)},
        "raw_sha256": dict(SHA256),
        "cache": cache_path if cache else None,
    }
    return PhysioNet(
        train=_make_split(parsed, train_rows, times, lo, hi),
        test=_make_split(parsed, test_rows, times, lo, hi),
        features=FEATURES,
        data_min=lo,
        data_max=hi,
        info=info,
    )
