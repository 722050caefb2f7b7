# The two README commands: `make book` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Data root: $SPREADCON_DATA if set; else the offline copies in ../shared/data
# when they exist; else spreadcon's default (~/.cache/spreadcon, downloads).
SPREADCON_DATA ?= $(if $(wildcard ../shared/data/MNIST),$(abspath ../shared/data),)
export SPREADCON_DATA
# The book needs the inline backend for its figures; a user-set MPLBACKEND (e.g. Agg) would drop them.
unexport MPLBACKEND
PYTEST_ARGS ?=

.PHONY: book test book-from-executed setup clean

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	touch $@

setup: $(BIN)/.installed

# Execute every chapter at its default CPU scale and build the HTML into _build/html.
book: $(BIN)/.installed
	$(BIN)/jupyter-book build --all -W --keep-going .
	$(BIN)/python .ci/check_html.py _build/html

# pytest over the package tests, and every chapter executed by nbmake.
test: $(BIN)/.installed
	$(BIN)/pytest --nbmake --nbmake-timeout=1200 $(PYTEST_ARGS) tests book

# CI: build the HTML from notebooks that `make test PYTEST_ARGS=--overwrite`
# already executed, so each chapter runs once.
book-from-executed: $(BIN)/.installed
	$(BIN)/python .ci/noexec_config.py _config.yml .ci/_config.ci.yml
	$(BIN)/jupyter-book build --all -W --keep-going --config .ci/_config.ci.yml .
	$(BIN)/python .ci/check_html.py _build/html

clean:
	rm -rf _build
