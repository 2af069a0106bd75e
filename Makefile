# taynode: `make test` and `make book` each do their own set-up on a fresh clone.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.taynode-installed
# Where `taynode data` looks for mirrored raw files before the npm registry / public URLs.
TAYNODE_MIRROR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export TAYNODE_MIRROR
NBDIR  := _build/nbtest

.PHONY: setup data test unit notebooks book bench clean

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

unit: setup
	$(BIN)/python -m pytest tests -q

notebooks: setup data
	rm -rf $(NBDIR) && mkdir -p $(NBDIR)
	for f in book/*.md; do $(BIN)/jupytext --quiet --to ipynb --output $(NBDIR)/$$(basename $${f%.md}).ipynb $$f || exit 1; done
	cd $(NBDIR) && ../../$(BIN)/python -m pytest --nbval-lax -p no:cacheprovider -q *.ipynb

book: setup data
	$(BIN)/jupyter-book build . -W --keep-going

test: setup data
	$(MAKE) unit
	$(MAKE) notebooks
	$(MAKE) book

bench: setup
	$(BIN)/python benchmarks/taylor_cost.py

clean:
	rm -rf _build
