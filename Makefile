# The two commands of the README. Both set up everything first (idempotent).
.PHONY: demo test lint
SHELL := /bin/bash

demo:  ## set up, then run the main job on the embedded default (synthetic world, local STAC, local Ray)
	bash infra/setup.sh
	.venv/bin/geoxai demo --out demo-output

test:  ## set up (incl. PostgreSQL/PostGIS + pgstac), then run the whole test suite
	bash infra/setup.sh --test
	.venv/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

lint:
	.venv/bin/ruff check geoxai pipelines tests benchmarks
	.venv/bin/mypy
