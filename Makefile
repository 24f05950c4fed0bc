# facegate: the two README commands are `make demo` and `make test`.
# Every target installs what it needs (apt packages, venv, models) by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE ?= $(HOME)/.cache/facegate
BUILD_VENV := $(CACHE)/build-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := mosquitto mosquitto-clients python3-venv openssl systemd shellcheck
# Python's default: compiled modules (and pytest's rewritten test files) are cached in
# __pycache__. Images that set PYTHONDONTWRITEBYTECODE make every pytest worker rewrite and
# compile all 55 test files again (6.2 instead of 2.4 CPU-s each) and every daemon or CLI
# process the tests start compile facegate again (about 0.15 CPU-s each).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install apt-deps models test lint demo bench bench-daemon pi-wheels ha-check clean

# System packages (mosquitto for the demo and the integration tests). Skipped when present.
apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: apt-deps $(BIN)/.installed

# TensorFlow lives only in this build venv, outside the work tree, and is reused across clones.
$(BUILD_VENV)/.installed: scripts/build_requirements.txt
	$(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/pip install -q --upgrade pip
	$(BUILD_VENV)/bin/pip install -q -r scripts/build_requirements.txt
	cp scripts/build_requirements.txt $@

models: apt-deps $(BUILD_VENV)/.installed
	$(BUILD_VENV)/bin/python scripts/build_models.py --cache $(CACHE) --out models

# Style and types are part of the test: ruff and mypy --strict run before pytest. Meanwhile,
# on the other core, one collection run leaves pytest's rewritten test modules in
# __pycache__: otherwise each worker of a fresh clone rewrites all of them (3.2 CPU-s each).
# Three workers on two cores: many end-to-end tests wait on a broker or a daemon (outages,
# cameras at 10 fps), so with two workers the CPU sat idle about a third of the time; a third
# worker fills it (a fourth measured no faster: 104-110 s against 104 s). One test file per
# worker keeps module fixtures (a daemon, a broker) whole. Tests that assert timing (marked
# `serial`) run afterwards, two at a time (one per core, nothing else running); only the
# files that mark any are collected again.
test: install models
	$(BIN)/pytest -q --collect-only -p no:cacheprovider >/dev/null 2>&1 & warm=$$!; \
	$(MAKE) --no-print-directory lint; status=$$?; wait $$warm; exit $$status
	$(BIN)/pytest -q -n 3 --dist loadfile -m "not serial"
	$(BIN)/pytest -q -n 2 --dist loadfile -m serial $$(grep -l 'mark\.serial' tests/test_*.py)

lint: install
	$(BIN)/ruff check daemon scripts tests
	$(BIN)/ruff format --check daemon scripts tests
	$(BIN)/mypy

demo: install models
	$(BIN)/python scripts/demo.py

bench: install models
	@# tflite_runtime (cp311 only, numpy<2) and face_recognition get their own cached venvs;
	@# only wheels, except face-recognition-models (a pure-data sdist, no compiler involved).
	@[ -f $(CACHE)/bench-tflite-venv/.installed ] || { python3.11 -m venv $(CACHE)/bench-tflite-venv && \
	  $(CACHE)/bench-tflite-venv/bin/pip install -q --only-binary :all: tflite-runtime==2.14.0 'numpy<2' \
	    opencv-python-headless==4.10.0.84 Pillow && touch $(CACHE)/bench-tflite-venv/.installed; } || \
	  echo "warning: tflite_runtime venv not installed; that comparison is skipped"
	@[ -f $(CACHE)/bench-fr-venv/.installed ] || { $(PYTHON) -m venv $(CACHE)/bench-fr-venv && \
	  $(CACHE)/bench-fr-venv/bin/pip install -q --only-binary dlib-bin,numpy,pillow,click \
	    dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 'setuptools<81' Click numpy Pillow && \
	  $(CACHE)/bench-fr-venv/bin/pip install -q --no-deps --only-binary :all: face_recognition==1.3.0 && \
	  touch $(CACHE)/bench-fr-venv/.installed; }
	$(BIN)/facegate bench --models models --out bench/out

# The daemon against issue 5's and 17's targets: face-to-unlock latency with its timeline,
# CPU with an empty scene and with a resident standing in view (a photo with liveness off,
# a rendered live resident with passive liveness), RSS over a soak with broker outages,
# events lost, stranger unlocks (about 16 minutes).
bench-daemon: install models apt-deps
	mkdir -p bench/out
	$(BIN)/python scripts/bench_daemon.py --rss-minutes 10 --cpu-seconds 60 --person-seconds 60 \
	  --live-seconds 60 --timeline > bench/out/daemon.json
	cat bench/out/daemon.json

# The runtime requirements resolve to aarch64 wheels for Raspberry Pi OS Bookworm (3.11)
# and Trixie (3.13): nothing is compiled on the Pi (metadata only, no download of wheels).
pi-wheels: install
	$(BIN)/python scripts/check_pi_wheels.py

# facegate's Home Assistant discovery configs through Home Assistant's own schemas
# (homeassistant 2025.4.4 in a cached Python 3.13 venv: about 4.5 minutes the first time).
# Not part of `make test`.
HA_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) \
  $(shell command -v python3.13))
ha-check: install
	@[ -f $(CACHE)/ha-venv/.installed ] || { $(HA_PYTHON) -m venv $(CACHE)/ha-venv && \
	  $(CACHE)/ha-venv/bin/pip install -q homeassistant==2025.4.4 && touch $(CACHE)/ha-venv/.installed; }
	$(BIN)/python scripts/check_homeassistant.py --emit | \
	  $(CACHE)/ha-venv/bin/python scripts/check_homeassistant.py --check

clean:
	rm -rf $(VENV) .demo models/*.tflite models/built.json models/data
