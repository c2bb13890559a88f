# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned, so no dependency resolution ever pulls a CUDA build.
	$(PIP) torch

$(VENV)/.demo-installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) -e ".[demo]"
	touch $@

$(VENV)/.test-installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) -e ".[test,demo]"
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(VENV)/bin/mcicl demo $(ARGS)

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
test: $(VENV)/.test-installed
	@$(PY) -m pytest $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check mcicl synthetic probing analysis tests benchmarks
