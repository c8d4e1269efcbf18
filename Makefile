# Fresh machine: `make demo` (main job on the embedded default) or `make test` (the suite).
# Both create .venv (Python 3.11) from this project's files when missing; the install is redone only
# when pyproject.toml changes (the stamp is keyed on its hash).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

.PHONY: venv demo test bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.installed-*
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

demo: venv
	$(PY) ray_job.py --config configs/demo.yaml

test: venv
	$(PY) -m pytest -q tests

bench: venv
	$(PY) -m bench

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
