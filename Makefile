# `make demo` and `make test` set the machine up first (scripts/setup.sh), so each works on a fresh clone.
.PHONY: setup demo test bench clean

export PATH := $(CURDIR)/.venv/bin:$(PATH)
PYTEST_ARGS ?=

setup:
	@bash scripts/setup.sh

demo:
	@bash scripts/setup.sh --no-daemons
	bash scripts/demo.sh

test: setup
	.venv/bin/pytest -q -ra $(PYTEST_ARGS)

bench: setup
	.venv/bin/python bench/run.py

clean:
	rm -rf .venv .pytest_cache .hypothesis build bench/out *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
