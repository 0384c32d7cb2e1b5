# The project's entry points. `make test` is what CI runs (through .ci/run, which also installs everything).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest

.PHONY: install test test-fast checkov clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

test: install
	$(PYTEST) -q

test-fast: install
	$(PYTEST) -q -m "not slow"

clean:
	rm -rf .pytest_cache .hypothesis build *.egg-info

checkov:
	infra/scripts/checkov.sh
