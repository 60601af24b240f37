# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# jsii (the CDK's runtime) on this machine: quiet the Node 20 warning, keep its cache in-repo.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export JSII_RUNTIME_PACKAGE_CACHE_ROOT := $(CURDIR)/.build/jsii-cache

.PHONY: demo test soak lint bench clean install

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/regionkit demo

test: $(STAMP)
	$(PY) -m pytest -q

# The residency state machine at 3,000 steps (CI runs 300), new examples each run.
soak: $(STAMP)
	REGIONKIT_TEST_SOAK=1 REGIONKIT_TEST_HYPOTHESIS=dev $(PY) -m pytest -q tests/test_residency_stateful.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy residency regions infra cli.py _cli examples

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .build cdk.out .pytest_cache .mypy_cache .ruff_cache .hypothesis regionkit-report
