# talosops.pki: development and CI entry points. `make help` lists them.
# Everything runs from the project's own virtual environment, .venv/ (created on first use
# from requirements-dev.txt, recreated when a requirements file or the Python changes).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.NOTPARALLEL:
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
REQUIREMENTS := requirements.txt requirements-dev.txt
# The interpreter the venv is made from, looked up before .venv/bin goes first on PATH.
PYTHON_BIN := $(shell PATH='$(subst $(BIN):,,$(PATH))' command -v $(PYTHON) || echo $(PYTHON))
# The stamp is keyed on the requirement files and that interpreter's version.
VENV_KEY := $(shell { $(PYTHON_BIN) -c 'import sys; print(sys.version)'; cat $(REQUIREMENTS); } 2>&1 | sha256sum | cut -c1-16)
VENV_STAMP := $(VENV)/.stamp-$(VENV_KEY)
SECTION := tools/ci/section

# Per-test timeout (seconds) for pytest: a hung simulated cluster fails its test, not CI's 90 min.
PYTEST_TIMEOUT ?= 600
PYTEST_ARGS ?=
PYTEST := $(BIN)/python -m pytest -ra --timeout=$(PYTEST_TIMEOUT) --durations=10 $(PYTEST_ARGS)
SANITY_ARGS ?=
DEMO_ARGS ?=
SIM_ARGS ?=

export PATH := $(BIN):$(PATH)

TEST_STAGES := proto changelog unit build ee lint docs sanity integration

.PHONY: help venv demo sim test $(TEST_STAGES) clean

help:
	@echo 'make demo         rotate the Talos API CA of a freshly started simulated cluster (tools/demo.py; DEMO_ARGS=--kubernetes: both CAs)'
	@echo 'make sim          run a simulated cluster in the foreground (Ctrl-C stops it), files in sim/ (tools/sim.py; SIM_ARGS="--workers 3")'
	@echo 'make test         the whole suite: $(TEST_STAGES)'
	@echo
	@echo 'Stages (each creates .venv/ first if needed):'
	@echo '  make venv         create .venv/ from requirements-dev.txt (reused while requirements are unchanged)'
	@echo '  make proto        plugins/module_utils/_talos_api_pb.py is up to date with proto/'
	@echo '  make changelog    antsibull-changelog lint (fragments) and lint-changelog-yaml'
	@echo '  make unit         pytest tests/unit'
	@echo '  make build        build the tarball, check its content, install, verify and import it'
	@echo '  make ee           ansible-builder create of docs/awx/execution-environment.yml; the image would get requirements.txt'
	@echo '  make lint         ansible-lint (production profile, .ansible-lint)'
	@echo '  make docs         antsibull-docs lint-collection-docs --plugin-docs (plugin and module documentation)'
	@echo '  make sanity       ansible-test sanity on a copy at ansible_collections/talosops/pki'
	@echo '  make integration  pytest tests/integration (simulated clusters on loopback addresses)'
	@echo '  make clean        remove .venv/ and every generated file'
	@echo
	@echo 'Variables: PYTHON=$(PYTHON) PYTEST_ARGS="-k name" SANITY_ARGS="--test pylint" PYTEST_TIMEOUT=$(PYTEST_TIMEOUT) DEMO_ARGS="--workers 1" SIM_ARGS="--workers 3"'

# tools/demo.py is the main job end to end.
demo: venv
	@$(SECTION) demo python tools/demo.py $(DEMO_ARGS)

# A simulated cluster to try the quick start's checklist against; runs until Ctrl-C (no section banner: it is interactive).
sim: venv
	@python tools/sim.py $(SIM_ARGS)

$(VENV_STAMP):
	@$(SECTION) venv tools/ci/make_venv.sh $(PYTHON_BIN) $(VENV) $(VENV_STAMP)

venv: $(VENV_STAMP)

proto: venv
	@$(SECTION) proto python tools/gen_proto.py --check

changelog: venv
	@$(SECTION) changelog bash -c 'antsibull-changelog lint && antsibull-changelog lint-changelog-yaml --strict changelogs/changelog.yaml'

unit: venv
	@$(SECTION) unit $(PYTEST) tests/unit

integration: venv
	@$(SECTION) integration $(PYTEST) tests/integration

build: venv
	@$(SECTION) build python tools/ci/build_check.py

ee: venv
	@$(SECTION) ee python tools/ci/ee_check.py

lint: venv
	@$(SECTION) lint tools/ci/lint.sh

docs: venv
	@$(SECTION) docs tools/ci/docs_lint.sh

sanity: venv
	@$(SECTION) sanity tools/ci/sanity.sh $(SANITY_ARGS)

# Runs every stage in order, stops at the first failure, then prints each stage's wall time.
test:
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	status=0; SECTION_LOG=$$log $(MAKE) --no-print-directory venv $(TEST_STAGES) || status=$$?; \
	printf '\n==> summary (wall time per stage)\n'; awk -F '\t' '{ printf "  %-12s %-20s %5ss\n", $$1, $$2, $$3 }' "$$log"; \
	if [ $$status -eq 0 ]; then echo 'make test: all stages passed'; else echo "make test: FAILED" >&2; fi; \
	exit $$status

clean:
	rm -rf $(VENV) .build demo sim tests/output .ansible .pytest_cache talosops-pki-*.tar.gz
	find . -name __pycache__ -type d -not -path './.git/*' -prune -exec rm -rf {} +
	$(PYTHON_BIN) tools/ci/sanity_tree.py --remove
