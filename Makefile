# backdoorlab: `make help` lists the targets. Every target bootstraps .venv when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help venv demo train purify analyze benchmark study report test test-slow clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo '  Pass Hydra overrides with ARGS, e.g. make purify ARGS="attack=blend defense=ft seed=1"'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the package with its dev tools (automatic for every target)

demo: $(STAMP) ## Train a BadNets model on digits, then purify it with FIP (ARGS=--baseline adds fine-tuning)
	$(PY) scripts/demo.py $(ARGS)

train: $(STAMP) ## Train a model: make train ARGS="attack=blend seed=1"
	$(PY) -m backdoorlab.train $(ARGS)

purify: $(STAMP) ## Purify a model: make purify ARGS="checkpoint=outputs/train/... defense=fip"
	$(PY) -m backdoorlab.purify $(ARGS)

analyze: $(STAMP) ## Curvature of a model's loss: make analyze ARGS="checkpoint=outputs/purify/... [trainer=ddp_sim]"
	$(PY) -m backdoorlab.analyze $(ARGS)

benchmark: $(STAMP) ## Every defense on the same models and pool, one table (ARGS="EXPERIMENT=cifar_cpu" for CIFAR-10)
	env $(ARGS) scripts/defense_benchmark.sh

STUDY ?= study_digits
JOBS ?= 2
study: $(STAMP) ## A study preset as one resumable sweep on JOBS processes, then its report (STUDY=study_cifar_cpu for CIFAR-10)
	$(PY) -m backdoorlab.purify -m experiment=$(STUDY) hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS) $(ARGS)
	$(PY) -m backdoorlab.report outputs/study/$(STUDY)* --out outputs/report/$(STUDY)

report: $(STAMP) ## Study report of run folders into outputs/report (ARGS="studies/attacks_digits --view attacks" for others)
	$(PY) -m backdoorlab.report $(or $(ARGS),outputs --out outputs/report)

test: $(STAMP) ## Run the fast test suite (under 10 minutes on 2 CPU cores)
	$(PY) -m pytest $(ARGS)

test-slow: $(STAMP) ## Run the slow tests (DDP, multirun sweeps, quality runs)
	$(PY) -m pytest -m slow $(ARGS)

clean: ## Remove run outputs, caches and the virtual environment
	rm -rf outputs .pytest_cache $(VENV) src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
