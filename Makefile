# agentvm — the one entry point. `make help` lists the targets.
# Portable across GNU make on Linux and the make shipped with macOS: no GNU-only shell tricks in recipes.

SHELL        := /bin/sh
.DEFAULT_GOAL := help

PYTHON       ?= python3
VENV         ?= .venv
VENV_BIN     := $(VENV)/bin
STAMP        := $(VENV)/.agentvm-installed
DOUBLE       := simulator/bin/multipass-double
PYTEST_ARGS  ?=

.PHONY: help setup lint test double-down golden verify-golden run demo batch clean doctor runs show bench \
        service service-stop submit

help: ## List the targets, one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## Create .venv with the pinned tools and check host prerequisites
	@$(VENV_BIN)/python scripts/check_prereqs.py

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

# Each test session tears down its own data folder of the double; `make double-down` removes everything.
test: $(STAMP) ## Run the whole test suite (unit, the double, integration, benchmarks at small size)
	$(VENV_BIN)/python -m pytest $(PYTEST_ARGS)

double-down: ## Stop and remove every instance, mount, bridge and DHCP server of the Multipass test double
	$(VENV_BIN)/python $(DOUBLE) down

golden: $(STAMP) ## Build, verify, seal and promote the golden VM (AGENTS=claude,gemini FORCE=1 KEEP=1); a no-op when nothing changed
	ANSIBLE_CONFIG=ansible.cfg $(VENV_BIN)/ansible-playbook playbooks/golden.yml $(if $(AGENTS),-e golden_provision_agents=$(AGENTS)) $(if $(FORCE),-e golden_image_force=$(FORCE)) $(if $(KEEP),-e golden_image_keep=$(KEEP))

verify-golden: $(STAMP) ## Verify a clone of the golden VM: agents and tools answer, fresh identity, no credentials
	ANSIBLE_CONFIG=ansible.cfg $(VENV_BIN)/ansible-playbook playbooks/verify-golden.yml

# make expands `$(...)` in command-line values; $(value PROMPT) hands the agent the text exactly as typed.
run: $(STAMP) ## Run the agent on PROMPT (or PROMPT_FILE) in a fresh clone of the golden VM (AGENT TIMEOUT WORKSPACE KEEP MODEL)
	@PROMPT='$(subst ','\'',$(value PROMPT))' $(VENV_BIN)/agentvm run

demo: $(STAMP) ## The whole flow on the Multipass double with a mock model API (Linux, root; no Multipass or API key)
	@PROMPT='$(subst ','\'',$(value PROMPT))' $(VENV_BIN)/python scripts/demo.py

# Operations (docs/operations.md). MAX_VMS, AGENTVM_QUEUE_TIMEOUT, AGENTVM_RETRIES and ALERT_WEBHOOK_URL pass
# through the environment to every run.
batch: $(STAMP) ## Run every prompt of PROMPTS=prompts.yaml in parallel within MAX_VMS; writes runs/batch-<id>.json
	@test -n '$(value PROMPTS)' || { echo 'make batch: set PROMPTS=prompts.yaml (see docs/operations.md)' >&2; exit 2; }
	@$(VENV_BIN)/agentvm batch '$(subst ','\'',$(value PROMPTS))'

clean: $(STAMP) ## Delete every <prefix>-run-* VM whose run is not alive, and stale locks (ALL=1: golden VMs too)
	@$(VENV_BIN)/agentvm clean $(if $(ALL),--all)

doctor: $(STAMP) ## Check Multipass, the golden VM, disk, memory and agent credentials; print a fix for each problem
	@$(VENV_BIN)/agentvm doctor

runs: $(STAMP) ## List recent runs: id, status, agent, duration, first line of the result (N=20)
	@$(VENV_BIN)/agentvm runs $(if $(N),-n $(N))

show: $(STAMP) ## Print one run's summary (RUN=<id>, a unique prefix, or last)
	@$(VENV_BIN)/agentvm show '$(if $(RUN),$(subst ','\'',$(value RUN)),last)'

bench: $(STAMP) ## Orchestration overhead and batch wall times on the double's realistic latency (figures only)
	@$(VENV_BIN)/python scripts/bench_ops.py

# The service (docs/service.md): runs as durable Temporal workflows. Without TEMPORAL_ADDRESS `make service` starts
# the embedded dev server (UI on http://127.0.0.1:8233) and this host's worker; with it, only the worker.
service: $(STAMP) ## Temporal dev server and this host's worker, in the foreground (DETACH=1: in the background)
	@$(VENV_BIN)/agentvm service $(if $(DETACH),--detach)

service-stop: $(STAMP) ## Stop the background service (its running runs are interrupted and retried later)
	@$(VENV_BIN)/agentvm service --stop

submit: $(STAMP) ## Submit PROMPT (or PROMPT_FILE) to the service; prints the run's id (WAIT=1 waits, HOST=h pins, KEY=k)
	@PROMPT='$(subst ','\'',$(value PROMPT))' $(VENV_BIN)/agentvm submit $(if $(WAIT),--follow) $(if $(HOST),--host '$(subst ','\'',$(value HOST))') $(if $(KEY),--key '$(subst ','\'',$(value KEY))')
