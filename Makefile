# The two commands a fresh machine needs (see README.md). Both set up .venv/ on first use.
.PHONY: demo test setup bench

demo: setup
	@bash scripts/demo.sh

test: setup
	.venv/bin/python -m pytest -q

setup:
	@bash scripts/setup.sh

bench: setup
	.venv/bin/python benchmarks/cli_startup.py
