# pushstr — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: run test lint typecheck pytest bench image clean node-tools h2load chromium promtool

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

## Start the server on its embedded defaults (./pushstr.toml is read when present).
run: $(STAMP)
	$(BIN)/pushstr serve

## Lint, type-check and run the whole test suite.
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) node-tools chromium promtool
	$(BIN)/pytest

## Every benchmark (bench/run_all.py): writes bench/RESULTS.md and the README's table. Not part of `make test`.
bench: $(STAMP) h2load
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/run_all.py

## The container image (Dockerfile) with podman, else docker; README "Container". Not part of `make test`.
## IMAGE and BASE_IMAGE name the image and its base; IMAGE_BUILD_FLAGS adds flags to the build command.
IMAGE ?= localhost/pushstr:latest
BASE_IMAGE ?= docker.io/library/python:3.11-slim-bookworm
image:
	deploy/build-image.sh '$(IMAGE)' '$(BASE_IMAGE)'

## h2load (Debian's nghttp2-client) is the delivery benchmark's raw limit.
h2load:
	@command -v h2load >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q nghttp2-client \
		|| (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nghttp2-client)

## Debian's chromium: the dashboard's browser test drives it through Playwright (which downloads no browser here).
chromium:
	@command -v chromium >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
		|| (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

## promtool (Debian's prometheus package) checks and unit-tests deploy/prometheus-rules.yml and the dashboard's queries.
promtool:
	@command -v promtool >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus \
		|| (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus)

## Node tools the tests run (a real Web Push server), exactly as pinned in package-lock.json.
node-tools: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
