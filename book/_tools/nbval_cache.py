"""pytest plugin: keep the notebooks nbval executed, so that the book build need not run them again.

nbval runs every code cell of a chapter in a kernel and checks that none fails. With
`--nb-cache DIR`, once the whole session has passed, each executed notebook (its cells with
the outputs nbval collected) is stored in the jupyter-cache at DIR, the cache the book build
reads (`execute_notebooks: cache` in _config.yml). The book build then finds every chapter
already executed, with the same code, and renders those outputs. A chapter whose code differs
from what was stored is executed by the book build as usual.

    pytest --nbval-lax -p nbval_cache --nb-cache _build/.jupyter_cache --nb-source book *.ipynb

Under pytest-xdist (`-n 2 --dist loadfile`, a notebook's cells in one worker) each worker stores
the notebooks it ran, once its own session has passed.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn

LANGUAGE_INFO = {
    "name": "python",
    "version": platform.python_version(),
    "mimetype": "text/x-python",
    "file_extension": ".py",
    "pygments_lexer": "ipython3",
    "codemirror_mode": {"name": "ipython", "version": 3},
    "nbconvert_exporter": "python",
}


def pytest_addoption(parser):
    group = parser.getgroup("nbval_cache")
    group.addoption("--nb-cache", default=None, help="jupyter-cache directory to store executed notebooks in")
    group.addoption("--nb-source", default=None, help="directory of the chapter sources (recorded as their URI)")


def pytest_sessionfinish(session, exitstatus):
    cache_dir = session.config.getoption("--nb-cache")
    if not cache_dir or exitstatus != 0:
        return  # a failed chapter is never cached: the book build would run (and fail on) it
    source_dir = Path(session.config.getoption("--nb-source") or ".")
    notebooks = {}
    count = {}
    for item in session.items:
        cell, outputs = getattr(item, "cell", None), getattr(item, "test_outputs", None)
        if cell is None or outputs is None:
            continue
        nb_file = item.parent
        count[nb_file] = count.get(nb_file, 0) + 1
        cell.outputs = outputs
        cell.execution_count = count[nb_file]
        for out in outputs:
            if out.get("output_type") == "execute_result":
                out["execution_count"] = count[nb_file]
        notebooks[nb_file] = nb_file.nb
    if not notebooks:  # the controller of `pytest -n`: its workers ran the notebooks and store them
        return
    cache = get_cache(cache_dir)
    for nb_file, nb in notebooks.items():
        nb.metadata["language_info"] = LANGUAGE_INFO
        uri = str((source_dir / Path(str(nb_file.fspath)).with_suffix(".md").name).resolve())
        bundle = CacheBundleIn(nb, uri, data={"executed_by": "nbval"})
        for attempt in range(20):  # two workers may write the cache's database at once
            try:
                cache.cache_notebook_bundle(bundle, check_validity=False, overwrite=True)
                break
            except Exception as e:  # sqlite "database is locked"
                if "locked" not in str(e) or attempt == 19:
                    raise
                time.sleep(0.5)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"nbval_cache: stored {len(notebooks)} executed notebooks in {cache_dir}")
