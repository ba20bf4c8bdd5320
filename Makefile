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

.PHONY: help run test test-fast audit setup data check-remote system mlflow-ui serve-model prefect-server serve clean
.DEFAULT_GOAL := help

help:  ## this list
	@echo "make <target>   (first time: make run, then make mlflow-ui)"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 18

run: setup data  ## the whole pipeline on the tiny profile (electra run; stages already current are skipped)
	electra run --profile $(PROFILE) --no-progress

test: setup data system  ## the test suite (two processes)
	python -m pytest -q -n 2

test-fast: setup data  ## the tests not marked slow: no servers, no end-to-end runs (a few minutes)
	python -m pytest -q -n 2 -m "not slow"

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

setup: $(VENV)/.installed  ## the virtual environment in .venv/ (log: .venv/setup.log)

# pip's and setuptools' chatter goes to the log; on a failure its tail is shown.
$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "setup: installing .venv (torch, the pipeline and its dev tools; log: $(VENV)/setup.log) ..."
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/python -m pip install -q --upgrade pip && \
	   $(BIN)/python -m pip install -q "$(TORCH_SPEC)" && \
	   $(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"; } > $(VENV)/setup.log 2>&1 || \
	  { tail -n 30 $(VENV)/setup.log; echo "setup failed: see $(VENV)/setup.log"; exit 1; }
	@touch $@
	@echo "setup: done ($$($(BIN)/electra --version))"

data: setup data/MANIFEST.md  ## the datasets in data/ (dvc pull from the default remote)

data/MANIFEST.md: data.dvc
	@$(MAKE) -s check-remote
	@dvc config --local core.check_update false 2>/dev/null || true
	@echo "data: dvc pull data.dvc ..."
	@dvc pull -q data.dvc
	@cd data && sha256sum --quiet -c SHA256SUMS && echo "data: pulled and checked (data/MANIFEST.md)"

# The default remote must exist before a pull: DVC's own error for a missing local remote
# does not say what to do about it.
check-remote:  ## check that the default DVC remote is configured and reachable
	@remote=$$(dvc remote default 2>/dev/null) || remote=""; \
	if [ -z "$$remote" ]; then \
	  echo "error: no default DVC remote in .dvc/config. Add one: dvc remote add -d <name> <url>," \
	       "or point ingest.sources in params.yaml at your own corpus (files, folders, globs or hf:<dataset>)." >&2; \
	  exit 1; fi; \
	url=$$(dvc config "remote.$$remote.url" 2>/dev/null); \
	case "$$url" in \
	  *://*) ;; \
	  "") echo "error: the default DVC remote '$$remote' has no url: dvc remote modify $$remote url <url>" >&2; exit 1;; \
	  *) dir="$$url"; case "$$url" in /*) ;; *) dir=".dvc/$$url";; esac; \
	     if [ ! -d "$$dir" ]; then \
	       echo "error: the default DVC remote '$$remote' is $$dir, which does not exist here." \
	            "Add a remote that holds the data: dvc remote add -d <name> <url> (or dvc remote modify --local" \
	            "$$remote url <path>), or point ingest.sources in params.yaml at your own corpus" \
	            "(files, folders, globs or hf:<dataset>)." >&2; \
	       exit 1; fi;; \
	esac

mlflow-ui: setup  ## the MLflow UI (runs, registry) on the embedded store: http://127.0.0.1:5000
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server --host 127.0.0.1 --port 5000 --workers 1 \
	  --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlartifacts

MODEL ?= electra-discriminator
ALIAS ?= champion
PORT ?= 5001
serve-model: setup  ## a registered model over REST: make serve-model MODEL=electra-sst2 [ALIAS=champion PORT=5001]
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} \
	  mlflow models serve -m "models:/$(MODEL)@$(ALIAS)" --env-manager local --host 127.0.0.1 --port $(PORT)

prefect-server: setup  ## a local Prefect server and UI on http://127.0.0.1:4200
	prefect server start --host 127.0.0.1 --port 4200 --analytics-off

serve: setup data  ## serve the electra-pipeline/<profile> deployments (needs PREFECT_API_URL)
	python -m flows.pipeline serve tiny micro

clean:  ## pipeline outputs (the DVC cache keeps them)
	rm -rf outputs
