# Two commands for a fresh machine: `make run` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Defined before the rules that name it: make expands a rule's prerequisites when it reads the rule.
NODE_TOOLS := tools/asyncapi/node_modules/.installed-stamp
# Where the docker client looks for CLI plugins (DOCKER_CONFIG moves it, as it moves the client's config).
COMPOSE_PLUGIN := $(or $(DOCKER_CONFIG),$(HOME)/.docker)/cli-plugins/docker-compose
PROMETHEUS_TOOLS := $(VENV)/.prometheus-stamp

.PHONY: setup run test faults lint format bench infra-up infra-down infra-status schemas clean

$(STAMP): pyproject.toml
	@echo ">> creating $(VENV) and installing the orchestrator with its test tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# The decision core compiled with mypyc (orchestrator/native.py); pure Python where no compiler can.
NATIVE := orchestrator/_native/domain/sourcing.sha256

# Built again after any edit in the package: mypyc builds in what it learnt of the modules sourcing imports.
$(NATIVE): $(shell find orchestrator -name '*.py' -not -path '*/_native/*') $(STAMP)
	@echo ">> compiling the decision core (orchestrator/domain/sourcing.py and geo.py) with mypyc"
	$(BIN)/python -m orchestrator.native build --if-possible

setup: $(STAMP) $(NATIVE)

## run: local Kafka + PostgreSQL, topics, migrations, the stages and the simulators with a live view (Ctrl-C stops all); ARGS="--orders 300" passes flags
run: setup
	$(BIN)/orchestrator start $(ARGS)

## test: the whole suite against the real Kafka and PostgreSQL (started locally unless given)
test: setup $(NODE_TOOLS) debian-tools $(PROMETHEUS_TOOLS) $(COMPOSE_PLUGIN)
	$(BIN)/pytest -q --durations=25

## faults: 20,000 orders through every stage (two processes each) while 30 are SIGKILLed, the broker restarts
## twice and PostgreSQL once, a DC closes; then the audit of the guarantees. ARGS="--orders 2000" passes flags
faults: setup
	$(BIN)/orchestrator faults $(ARGS)

lint: setup
	$(BIN)/ruff check orchestrator tests bench
	$(BIN)/ruff format --check orchestrator tests bench
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format orchestrator tests bench
	$(BIN)/ruff check --fix orchestrator tests bench

bench: setup
	$(BIN)/python -m bench

infra-up: setup
	$(BIN)/orchestrator infra up

infra-down: setup
	$(BIN)/orchestrator infra down

infra-status: setup
	$(BIN)/orchestrator infra status

schemas: setup
	$(BIN)/orchestrator schemas export

clean:
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache orchestrator/_native

$(NODE_TOOLS): tools/asyncapi/package-lock.json
	.ci/install-node-tools
	@touch $@

.PHONY: asyncapi-tools
## asyncapi-tools: the official AsyncAPI parser (npm) that tests/test_asyncapi.py validates asyncapi.yaml with
asyncapi-tools: $(NODE_TOOLS)

.PHONY: debian-tools
## debian-tools: kcat and jq from Debian's packages (tests/test_integration_guide.py runs the README's guide with them)
debian-tools:
	.ci/install-debian-tools

## prometheus-tools: promtool and prometheus (Debian's package; its service is not started) that
## tests/test_prometheus.py checks deploy/prometheus with and scrapes a local run with
.PHONY: prometheus-tools
prometheus-tools: $(PROMETHEUS_TOOLS)

$(PROMETHEUS_TOOLS): .ci/install-prometheus
	.ci/install-prometheus
	@mkdir -p $(@D)
	@touch $@

## compose-plugin: the Docker Compose v2 CLI plugin, built from its pinned Go module (no Docker engine
## needed): tests/test_deploy.py checks deploy/docker-compose.yml with `docker compose config`
.PHONY: compose-plugin
compose-plugin: $(COMPOSE_PLUGIN)

# Touched after the script so a plugin already at the pinned version is not checked again each run.
$(COMPOSE_PLUGIN): .ci/install-compose
	.ci/install-compose
	@touch $@
