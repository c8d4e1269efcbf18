# Fresh machine: `make demo` (main job on the embedded default) or `make test` (the suite).
# Both create .venv (Python 3.11) from this project's files when missing; the install is redone only
# when pyproject.toml changes (the stamp is keyed on its hash).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

.PHONY: venv demo test bench lint lock clean

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

# The images' locked dependencies (Dockerfile: pip/uv install --require-hashes), resolved from PyPI for Linux
# x86_64 and Python 3.11. requirements.lock: pyproject.toml's stack plus pip (Ray runtime environments) and the
# build backend (the project is installed without build isolation); requirements-mlflow.lock: the tracking
# server, held to the same versions by requirements.lock. Needs uv (`pip install uv`, outside .venv) and PyPI.
UV ?= uv
LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
	--custom-compile-command 'make lock'

lock:
	printf 'pip\nsetuptools>=69\nwheel\n' | $(UV) pip compile pyproject.toml - $(LOCK_FLAGS) -o requirements.lock
	printf 'mlflow[auth]\nboto3\npsycopg2-binary\n' | $(UV) pip compile - -c requirements.lock $(LOCK_FLAGS) \
		-o requirements-mlflow.lock

clean:
	rm -rf $(VENV) .pytest_cache
