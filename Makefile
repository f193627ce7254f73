# Two commands do all set-up:  `make demo`  and  `make test`  (`make docs` builds the documentation site).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs docs-check setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the local CPU wheel first: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0 || echo "torch==2.13.0 not available here; pip will pick a torch build"
	$(BIN)/python -m pip install --quiet -e ".[dev,docs]"
	# the dashboard's browser tests drive Debian's chromium (Playwright's own browser download cannot work here)
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/lightning-difficulty demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples docs/griffe_roles.py
	$(BIN)/ruff format --check src tests benchmarks examples docs/griffe_roles.py
	$(BIN)/mypy

# the documentation site (mkdocs.yml, docs/): --strict turns every warning (a broken link, a page left out of
# the nav, a docstring mkdocstrings cannot read) into a failure
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# the same strict build as a check of `make test`, into a throw-away folder
docs-check: $(STAMP)
	@tmp=$$(mktemp -d) && NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir "$$tmp"; \
	rc=$$?; rm -rf "$$tmp"; if [ $$rc -ne 0 ]; then echo "the strict docs build failed (make docs shows why)"; fi; exit $$rc

# pytest exits 5 when it collected no test: that is a failure, not a pass
test: lint docs-check
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) runs lightning_logs site
