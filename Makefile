# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# jsii (the CDK's runtime) on this machine: quiet the Node 20 warning, keep its cache in-repo.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export JSII_RUNTIME_PACKAGE_CACHE_ROOT := $(CURDIR)/.build/jsii-cache

.PHONY: demo test test-slow test-all soak lint bench clean install

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# An editable install compiles nothing, and PYTHONDONTWRITEBYTECODE (set on some CI
	# machines) stops imports from caching bytecode: compile once here, or every
	# `regionkit` start and every local server compiles regionkit anew (~45 ms).
	$(PY) -m compileall -q residency regions infra _cli cli.py
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/regionkit demo

# Two tiers, both on several workers (most tests wait on moto servers, not the CPU).
# `make test` is the first: everything but the tests marked slow (the demo end to end,
# CDK synths with cfn-lint and cdk-nag, the conflict ground truth, headless Chromium).
# CI (.ci/run) runs both tiers.
WORKERS ?= 4
test: $(STAMP)
	$(PY) -m pytest -q -n $(WORKERS) --dist worksteal -m "not slow"

# The wall-clock tests (a drill's RTO and convergence on real servers, the demo) run alone
# after the rest: on 2 cores, four workers' CDK synths and browsers would be measured too.
test-slow: $(STAMP)
	$(PY) -m pytest -q -n $(WORKERS) --dist worksteal -m "slow and not wallclock"
	$(PY) -m pytest -q -p no:xdist -m wallclock

test-all: $(STAMP)
	$(PY) -m pytest -q -n $(WORKERS)

# The residency state machine at 3,000 steps (CI runs 300) and 1,000 seeded fault
# schedules (CI runs 10 + 200), new examples each run.
soak: $(STAMP)
	REGIONKIT_TEST_SOAK=1 REGIONKIT_TEST_HYPOTHESIS=dev $(PY) -m pytest -q tests/test_residency_stateful.py
	REGIONKIT_TEST_SCHEDULES_AT_SCALE=1000 $(PY) -m pytest -q tests/test_drills.py -k at_scale

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy residency regions infra cli.py _cli examples

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .build cdk.out .pytest_cache .mypy_cache .ruff_cache .hypothesis regionkit-report
