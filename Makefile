# agentvm — the one entry point. `make help` lists the targets.
#
# Variables are data. Every variable given on make's command line (PROMPT, AGENT, N, RUN, ALL, ...) is turned
# into a simply expanded copy of its raw text and exported as is, so make never expands `$(shell ...)`, `$$`
# or anything else in it, a value of several lines stays one value, and recipes never paste a value into a
# shell command: each recipe runs agentvm, which reads the variables from its environment and checks them.
# Relies only on constructs of GNU make 3.81 (macOS): $(value), $(eval), $(foreach), :=, export.
$(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(eval override $(v) := $$(value $(v)))$(eval export $(v))))
# make's own copy of the command line (MAKEFLAGS) is not for the tools (it can be larger than one variable may be).
unexport MAKEFLAGS MAKEOVERRIDES

SHELL        := /bin/sh
.DEFAULT_GOAL := help

PYTHON       ?= python3
VENV         ?= .venv
VENV_BIN     := $(VENV)/bin
STAMP        := $(VENV)/.agentvm-installed
AGENTVM      := $(VENV_BIN)/agentvm
DOUBLE       := simulator/bin/multipass-double

.PHONY: help setup lint test test-unit double-down golden verify-golden run demo batch pool pool-stop clean doctor runs show bench \
        service service-stop submit molecule

help: ## List the targets, one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## Create .venv with the pinned tools, install the simulator's host packages (Linux, root), check prerequisites
	@$(VENV_BIN)/python scripts/check_prereqs.py --install-host-packages

# The venv is rebuilt only when pyproject.toml changes, so a second `make setup` is a quick no-op.
$(STAMP): pyproject.toml
	@$(PYTHON) scripts/check_prereqs.py --python-only
	@test -x $(VENV_BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing pinned packages into $(VENV) ..."
	@$(VENV_BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP) ## Run ansible-lint (production profile), yamllint and ruff
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check .
	$(VENV_BIN)/yamllint --strict .
	$(VENV_BIN)/ansible-lint

test: $(STAMP) ## Run the whole suite (unit, the simulator's real instances, integration, benchmarks at small size)
	@$(VENV_BIN)/python scripts/run_tests.py

test-unit: $(STAMP) ## Run the tests that need no root and no Multipass double (about a minute and a half)
	@$(VENV_BIN)/python scripts/run_tests.py --unit

double-down: ## Stop and remove every instance, mount, bridge and DHCP server of the Multipass double on this machine
	@$(VENV_BIN)/python $(DOUBLE) down

golden: $(STAMP) ## Build, verify, seal and promote the golden VM (AGENTS=claude,gemini FORCE=1 KEEP=1); a no-op when nothing changed
	@$(AGENTVM) golden

verify-golden: $(STAMP) ## Verify a clone of the golden VM: agents and tools answer, fresh identity, no credentials
	@$(AGENTVM) verify-golden

run: $(STAMP) ## Run the agent on PROMPT (or PROMPT_FILE) in a fresh clone of the golden VM (AGENT TIMEOUT WORKSPACE KEEP MODEL)
	@$(AGENTVM) run

demo: $(STAMP) ## The whole flow on the Multipass double with a mock model API (Linux, root; no Multipass or API key)
	@$(VENV_BIN)/python scripts/demo.py

batch: $(STAMP) ## Run every prompt of PROMPTS=prompts.yaml in parallel within MAX_VMS; writes runs/batch-<id>.json
	@$(AGENTVM) batch

pool: $(STAMP) ## Keep POOL=N clones of the golden started and ready, so runs start at once; returns once filled
	@$(AGENTVM) pool --detach

pool-stop: $(STAMP) ## Stop the warm pool's keeper and delete its VMs
	@$(AGENTVM) pool --stop

clean: $(STAMP) ## Delete this host's VMs of dead runs, stale locks and scratch (ALL=1: golden and old unknown runs too; KEPT=1)
	@$(AGENTVM) clean

doctor: $(STAMP) ## Check Multipass, the golden VM, disk, memory and agent credentials; print a fix for each problem
	@$(AGENTVM) doctor

runs: $(STAMP) ## List recent runs: id, status, agent, duration, first line of the result (N=20)
	@$(AGENTVM) runs

show: $(STAMP) ## Print one run's summary (RUN=<id>, a unique prefix, or last)
	@$(AGENTVM) show

molecule: $(STAMP) ## Each role's Molecule scenario, one `molecule test` each (ROLES=run_vm,agent_run; the double when no Multipass)
	@$(VENV_BIN)/python scripts/molecule.py

bench: $(STAMP) ## Overhead vs a shell script, per-phase breakdown, prompt->agent with/without a warm pool, exec vs SSH, batch table, proxy latency (figures only)
	@$(VENV_BIN)/python scripts/bench_ops.py

service: $(STAMP) ## Temporal dev server and this host's worker (and the webhook receiver with AGENTVM_WEBHOOK_ROUTES), foreground (DETACH=1: background)
	@$(AGENTVM) service

service-stop: $(STAMP) ## Stop the background service (its running runs are interrupted and retried later)
	@$(AGENTVM) service --stop

submit: $(STAMP) ## Submit PROMPT (or PROMPT_FILE) to the service; prints the run's id (WAIT=1 waits, HOST=h pins, KEY=k)
	@$(AGENTVM) submit
