# Two commands do all set-up:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the local CPU wheel first: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0 || echo "torch==2.13.0 not available here; pip will pick a torch build"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# the dashboard's browser tests drive Debian's chromium (Playwright's own browser download cannot work here)
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/lightning-difficulty demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

# pytest exits 5 when it collected no test: that is a failure, not a pass
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) runs lightning_logs
