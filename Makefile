# Two commands on a fresh machine: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.limner-installed
FONT := /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf

.PHONY: setup examples serve docs test lint typecheck check bench train clean cluster

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[local,dev,watermark]'
	# spandrel (upscaler files) without its torchvision: none imports beside the pinned CPU torch on x86_64,
	# and a broken one breaks transformers (limner.engines.spandrel_import explains how spandrel runs without).
	$(BIN)/python -m pip install -q --no-deps 'spandrel>=0.4.2'
	touch $(STAMP)

# The emoji font is the built-in model's training material (tests render a few glyphs from it).
$(FONT):
	-(apt-get install -y -qq fonts-noto-color-emoji >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq fonts-noto-color-emoji)) >/dev/null 2>&1

# PostgreSQL and Redis for the accounts tests, which start private instances on loopback ports.
# Instant when both are present; without apt (or root) those tests skip and say why.
.PHONY: services
services:
	-@(command -v redis-server && ls /usr/lib/postgresql/*/bin/initdb) >/dev/null 2>&1 || \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq postgresql redis-server || \
	   (apt-get update -qq && apt-get install -y -qq postgresql redis-server)) >/dev/null 2>&1 || \
	  echo "note: could not install postgresql/redis-server; their tests will be skipped"

# Debian's chromium for the browser tests (Playwright drives it and never downloads a browser of its own).
# Instant when present; without apt (or root) those tests skip and say why.
.PHONY: browser
browser:
	-@command -v chromium >/dev/null 2>&1 || \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq chromium || \
	   (apt-get update -qq && apt-get install -y -qq chromium)) >/dev/null 2>&1 || \
	  echo "note: could not install chromium; the browser tests will be skipped"

# opencv-python, which the invisible watermark (limner[watermark]) pulls in, loads libGL and GLib from the
# system. Instant when both are present; without them the watermark tests skip and the setting says why.
.PHONY: cv-libs
cv-libs:
	-@(ldconfig -p | grep -q 'libGL.so.1 ' && ldconfig -p | grep -q 'libglib-2.0.so.0 ') || \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq libgl1 && \
	   (apt-get install -y -qq libglib2.0-0t64 || apt-get install -y -qq libglib2.0-0)) >/dev/null 2>&1 || \
	  echo "note: could not install libgl1/GLib; the invisible watermark tests will be skipped"

# buildah, podman and mmdebstrap for the container image and its test (tests/deploy/test_image.py), which
# builds on a Debian base made here. Instant when present; without apt (or root) that test skips and says why.
.PHONY: container-tools
container-tools:
	-@(command -v buildah && command -v podman && command -v mmdebstrap && command -v runc) >/dev/null 2>&1 || \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq buildah podman mmdebstrap runc || \
	   (apt-get update -qq && apt-get install -y -qq buildah podman mmdebstrap runc)) >/dev/null 2>&1 || \
	  echo "note: could not install buildah/podman/mmdebstrap; the container image test will be skipped"

setup: $(STAMP) $(FONT) services browser cv-libs container-tools

# node-fetch for the reference services' JavaScript examples (tests/examples); skipped without npm.
EXAMPLES := tests/examples
$(EXAMPLES)/node_modules/.package-lock.json: $(EXAMPLES)/package.json
	-command -v npm >/dev/null && cd $(EXAMPLES) && npm install --no-audit --no-fund --loglevel=error

# axe-core for the playground's accessibility scan (tests/playground); skipped without npm.
PLAYGROUND_TESTS := tests/playground
$(PLAYGROUND_TESTS)/node_modules/.package-lock.json: $(PLAYGROUND_TESTS)/package.json
	-command -v npm >/dev/null && cd $(PLAYGROUND_TESTS) && npm install --no-audit --no-fund --loglevel=error

examples: $(EXAMPLES)/node_modules/.package-lock.json $(PLAYGROUND_TESTS)/node_modules/.package-lock.json

serve: setup
	$(BIN)/limner serve

# PostgreSQL, Redis, an S3-compatible store, a Ray head and two API replicas (:8001, :8002), all on loopback.
cluster: setup
	$(BIN)/limner dev cluster

# The documentation site (mkdocs.yml over docs/) into site/: pages excerpt README.md, the API reference is
# generated from the server's OpenAPI document.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The container image (Containerfile) as limner:latest, with buildah. IMAGE_BASE=... builds on another base
# (the default is the official python:3.11-slim); `make image-base` makes one from Debian's packages here,
# for machines that reach no container registry: make image-base image IMAGE_BASE=localhost/limner-base:bookworm
.PHONY: image image-base
image: container-tools
	deploy/container/build-image.sh

image-base: container-tools
	deploy/container/debian-base.sh

# The longest process-level suites (a whole loopback cluster with Ray, compiling a model, bursts, replica
# failover, input memory under load) run in `make test-slow`, so `make test` (and CI) stays within its time;
# `make test-all` runs everything, the container image test included.
SLOW_TESTS := tests/cli/test_cluster.py tests/engines/test_compile.py tests/reliability/test_burst.py \
	tests/reliability/test_replica_failover.py tests/reliability/test_input_memory.py

test: setup examples
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(addprefix --ignore=,$(SLOW_TESTS))

.PHONY: test-slow test-all
test-slow: setup examples
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(SLOW_TESTS)

test-all: test test-slow test-image

# The checks CI runs (.ci/run) and .pre-commit-config.yaml repeats on each commit.
lint: setup
	$(BIN)/ruff check limner tests benchmarks
	$(BIN)/ruff format --check limner tests benchmarks

# tests/examples/reference is the reference services' example code, kept as written (not type-checked).
typecheck: setup
	$(BIN)/mypy limner tests --exclude '^tests/examples/reference/'

# Lint, then types, then the tests, one after another (even under -j); the first failure stops it.
.NOTPARALLEL: check
check: lint typecheck test

# The container image test (tests/deploy/test_image.py): builds the image on a Debian base made here and runs
# it. Minutes (about 18 on a fresh machine, 2-3 with its cache), so it is kept out of `make test`.
.PHONY: test-image
test-image: setup
	LIMNER_IMAGE_TEST=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/deploy/test_image.py

# wrk, the C load generator of the gateway benchmark (benchmarks/gateway_vs_litellm.py). Instant when present.
.PHONY: wrk
wrk:
	-@command -v wrk >/dev/null 2>&1 || \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq wrk || \
	   (apt-get update -qq && apt-get install -y -qq wrk)) >/dev/null 2>&1 || \
	  echo "note: could not install wrk; the limner-vs-LiteLLM benchmark needs it"

bench: setup wrk
	$(BIN)/python -m benchmarks

# limner beside LiteLLM's proxy as gateways, about five minutes; the first run installs the pinned
# litellm[proxy] into .bench/litellm-venv. Writes benchmarks/results/gateway_vs_litellm.{md,json}.
.PHONY: bench-gateway
bench-gateway: setup wrk
	$(BIN)/python -m benchmarks.gateway_vs_litellm

# The built-in model from scratch (limner/builtin/emoji-64/): about 40 minutes on one core of this machine,
# deterministic, resumable (rerun to continue; checkpoints in ~/.cache/limner/train-emoji). Its training data,
# the font, emojibase-data (the CLDR emoji annotations) and emojilib (from npm), is installed here, never at run time.
# emojilib adds keywords (MIT, like emojibase-data); the versions are pinned so a rebuild gives the same model.
EMOJI_NPM := $(HOME)/.cache/limner/npm
EMOJI_DATA := $(EMOJI_NPM)/node_modules/emojibase-data/en/data.json $(EMOJI_NPM)/node_modules/emojilib/dist/emoji-en-US.json
$(EMOJI_DATA):
	npm install --prefix $(EMOJI_NPM) --no-audit --no-fund --loglevel=error emojibase-data@17.0.0 emojilib@4.0.3

.PHONY: train-data
train-data: $(FONT) $(EMOJI_DATA)

train: setup train-data
	LIMNER_EMOJIBASE_DIR=$(EMOJI_NPM)/node_modules/emojibase-data LIMNER_EMOJILIB_DIR=$(EMOJI_NPM)/node_modules/emojilib \
	  $(BIN)/python -m limner.builtin.train_emoji

clean:
	rm -rf $(VENV) .bench .limner .pytest_cache .mypy_cache .ruff_cache build
