"""Facts about the machine and software a run or benchmark used (for run records)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path

__all__ = ["machine_info", "versions", "timing"]

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "diffrax", "equinox", "numpy", "orbax-checkpoint")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The vector instruction sets XLA's CPU compiler may use (it compiles for the host): two machines that
# differ in these may round the last bit of a sum differently, so a re-evaluation there is not exact.
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512cd",
              "avx512ifma", "avx512vbmi", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile")


def _isa() -> list[str] | None:
    """The host's vector instruction sets among `_ISA_FLAGS` (None where /proc/cpuinfo is not readable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in _ISA_FLAGS if f in flags]
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict:
    """CPU model and its vector instruction sets, cores, memory, OS, and the JAX backend/devices in use."""
    import jax

    devices = jax.devices()
    return {
        "cpu": _cpu_model(),
        "isa": _isa(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "jax_backend": jax.default_backend(),
        "devices": sorted({d.device_kind for d in devices}),
        "num_devices": len(devices),
    }


def versions() -> dict:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def timing(fn, *args, repeats: int = 30, min_time: float = 0.02):
    """Time `fn(*args)` by the project's protocol.

    Compiles first (one untimed call), blocks on the result, then takes `repeats`
    samples; each sample runs the call `n` times (n chosen so a sample lasts at least
    `min_time` seconds) and records the mean. Returns a dict with the median and the
    25th/75th percentiles in seconds per call.
    """
    import time

    import jax
    import numpy as np

    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    one = max(time.perf_counter() - t, 1e-7)
    n = max(1, int(min_time / one))
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t) / n)
    q25, med, q75 = np.percentile(samples, [25, 50, 75])
    return {"median_s": float(med), "q25_s": float(q25), "q75_s": float(q75), "repeats": repeats, "calls_per_sample": n}
