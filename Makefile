# The two commands of the README: `make fuzz` and `make test`. Both create the virtualenv on
# first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
P ?= x86/text_poke_bp:no-final-sync
DURATION ?= 20
ARGS ?=

.PHONY: fuzz test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

fuzz: $(VENV)/.installed
	$(VENV)/bin/patchfuzz fuzz $(P) --seconds $(DURATION) $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check fuzzer workers db tests
	$(VENV)/bin/pytest

bench: $(VENV)/.installed
	$(VENV)/bin/python -m fuzzer.bench $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
