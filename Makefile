# taynode: `make test` and `make book` each do their own set-up on a fresh clone.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.taynode-installed
# Where `taynode data` looks for mirrored raw files before the npm registry / public URLs.
TAYNODE_MIRROR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export TAYNODE_MIRROR
NBDIR  := _build/nbtest
# The executed chapters the book build renders (jupyter-cache; `execute_notebooks: cache`).
JCACHE := _build/.jupyter_cache
# Chapters: the pages of _toc.yml that are MyST notebooks (pages without a jupytext header have
# no code); a chapter in the making stays out of the tests until _toc.yml lists it.
TOC_PAGES := $(shell sed -n 's/^ *\(- \)\{0,1\}\(file\|root\): *//p' _toc.yml)
CHAPTERS := $(shell grep -l '^jupytext:' $(addsuffix .md,$(TOC_PAGES)))
# MathJax, served from the built HTML so that maths renders offline (npm package, checksummed).
MATHJAX_VERSION := 3.2.2
MATHJAX_SHA256  := 1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09
MATHJAX := book/_static/mathjax/tex-mml-chtml.js

.PHONY: setup data test unit slow notebooks book html browser mathjax bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

data: setup
	$(BIN)/taynode data fetch

# The linter, then the unit tests on two processes; the end-to-end tests marked slow, and the costliest
# unit tests (tests/conftest.py SLOW), run in `make slow`.
unit: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest tests -q -n 2 -m "not slow"

slow: setup data
	$(BIN)/python -m pytest tests -q -n 2 -m slow

# Every chapter under nbval (a failing cell fails the target), two chapters at a time (each in its
# own kernel: --dist loadfile keeps a chapter's cells in one process); the executed notebooks are
# kept in $(JCACHE), so that `make html` renders them without executing any chapter again.
notebooks: setup data
	rm -rf $(NBDIR) $(JCACHE) && mkdir -p $(NBDIR)
	for f in $(CHAPTERS); do $(BIN)/jupytext --quiet --to ipynb --output $(NBDIR)/$$(basename $${f%.md}).ipynb $$f || exit 1; done
	cd $(NBDIR) && PYTHONPATH=$(CURDIR)/book/_tools ../../$(BIN)/python -m pytest --nbval-lax -p no:cacheprovider \
		-p nbval_cache --nb-cache $(CURDIR)/$(JCACHE) --nb-source $(CURDIR)/book -q -n 2 --dist loadfile *.ipynb

# The book from scratch: every chapter executed once by the build, warnings are errors.
book: setup data mathjax
	rm -rf $(JCACHE)
	$(MAKE) html

# The HTML from the chapters in $(JCACHE) (a chapter not found there is executed).
html: setup mathjax
	$(BIN)/jupyter-book build . --all -W --keep-going

# Every page of the built HTML ($(BOOK_HTML)) in headless Chromium, served from 127.0.0.1 with no
# other host reachable: console errors, maths left as TeX, images that did not load, links to
# missing pages or anchors, tables and code wider than the column (tests/book/test_browser.py);
# a screenshot of every page in _build/screenshots/. Needs Debian's `chromium` (skipped without).
BOOK_HTML ?= _build/html
browser: setup mathjax
	rm -rf _build/screenshots
	TAYNODE_BOOK_HTML=$(BOOK_HTML) TAYNODE_SCREENSHOTS=_build/screenshots \
		$(BIN)/python -m pytest tests/book -q -p no:cacheprovider --tb=short

mathjax: $(MATHJAX)

$(MATHJAX):
	rm -rf _build/mathjax && mkdir -p _build/mathjax
	cd _build/mathjax && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	echo "$(MATHJAX_SHA256)  _build/mathjax/mathjax-$(MATHJAX_VERSION).tgz" | sha256sum --check --quiet -
	tar -xzf _build/mathjax/mathjax-$(MATHJAX_VERSION).tgz -C _build/mathjax
	rm -rf book/_static/mathjax && mkdir -p book/_static/mathjax/output
	cd _build/mathjax/package/es5 && cp -r input a11y ui sre adaptors $(CURDIR)/book/_static/mathjax/ \
		&& cp -r output/chtml.js output/chtml $(CURDIR)/book/_static/mathjax/output/
	cp _build/mathjax/package/LICENSE book/_static/mathjax/LICENSE
	cp _build/mathjax/package/es5/tex-mml-chtml.js $@
	rm -rf _build/mathjax

test: setup data
	$(MAKE) unit
	$(MAKE) slow
	$(MAKE) notebooks
	$(MAKE) html
	$(MAKE) browser

bench: setup
	$(BIN)/python benchmarks/taylor_cost.py

clean:
	rm -rf _build
