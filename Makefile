# The README's two commands:  `make run`  (the whole pipeline, tiny profile)  and  `make test`.
# Each sets up everything it needs on a fresh machine: a virtual environment, the
# dependencies, and the data (`dvc pull` from the default remote in .dvc/config).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# The CPU wheel on reference machines; GPU users: make TORCH_SPEC='torch==2.13.0' with their index.
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= tiny

export PATH := $(BIN):$(PATH)
# Offline and quiet, with every cache and store inside the project (all git-ignored).
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_HOME := $(CURDIR)/.hf
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

.PHONY: run test audit setup data system mlflow-ui prefect-server serve clean

run: setup data  ## the whole pipeline on the tiny profile, through DVC
	dvc repro
	@echo "Registered models: make mlflow-ui, then open http://127.0.0.1:5000/#/models"

test: setup data system  ## the test suite
	python -m pytest -q

audit: setup  ## dependency advisories (pip-audit); fails only on one with a fix to move to
	python .ci/audit.py

# System packages the tests drive for real, from Debian, installed once when missing:
# Chromium for the registry-UI check (Playwright never downloads a browser of its own) and
# PostgreSQL for the scaled-out topology (MLflow and Prefect servers on Postgres).
system:
	@{ command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || { \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium postgresql; }

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

data: setup data/MANIFEST.md

data/MANIFEST.md: data.dvc
	dvc config --local core.check_update false 2>/dev/null || true
	dvc pull -q data.dvc
	cd data && sha256sum --quiet -c SHA256SUMS

mlflow-ui: setup  ## the MLflow UI (runs, registry) on the embedded store
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server --host 127.0.0.1 --port 5000 --workers 1 \
	  --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlartifacts

prefect-server: setup  ## a local Prefect server and UI on http://127.0.0.1:4200
	prefect server start --host 127.0.0.1 --port 4200 --analytics-off

serve: setup data  ## serve the electra-pipeline/<profile> deployments (needs PREFECT_API_URL)
	python -m flows.pipeline serve tiny micro

clean:  ## pipeline outputs (the DVC cache keeps them)
	rm -rf outputs
