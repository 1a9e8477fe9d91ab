# Everything a user types. The Makefile creates .venv itself; nothing is installed by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SIM    := $(VENV)/bin/sim
# Public data: downloaded from its public source, or copied from a local folder when these are set
# (CI sets them to ../shared/...). Left empty, ../shared is used when it exists, else the download.
SHARED       ?= ../shared
TRACES_SRC   ?= $(if $(wildcard $(SHARED)/traces/*.csv),$(SHARED)/traces,)
PROFILES_SRC ?= $(if $(wildcard $(SHARED)/profiles/helix_asplos25/README.md),$(SHARED)/profiles/helix_asplos25,)
PLACEMENTS_SRC ?= $(if $(wildcard $(SHARED)/milp/placements/*.ini),$(SHARED)/milp/placements,)
HELIX_PROFILES := profiles/helix_asplos25
HELIX_PLACEMENTS := placements/helix_asplos25

.PHONY: install install-dev install-torch demo test bench profile validate experiments traces helix-profiles helix-placements helix-sp-placements data lint clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: install

# torch (the profiler and the runtime; pinned by constraints.txt, the CPU build where a local wheel provides it) and
# nvidia-ml-py (device facts).
# The simulator itself (`sim`) never imports torch.
$(VENV)/.installed-torch: $(VENV)/.installed constraints.txt
	$(PY) -m pip install --quiet -e '.[dev,gpu]' -c constraints.txt
	touch $@

install-torch: $(VENV)/.installed-torch

# Time real transformer layers on this machine and write latency tables that `sim` then uses:
#   make profile GPU=L4 [MODEL=llama2-70b[,llama3-8b]]   (default: the preset clusters' models)
#   make profile GPU=cpu                                 (no GPU needed; a small LLaMA-style model)
GPU   ?=
MODEL ?=
comma := ,
profile: install-torch
	@test -n "$(GPU)" || { echo "usage: make profile GPU=L4 [MODEL=llama2-70b]   (GPU=cpu profiles the CPU)" >&2; exit 1; }
	$(PY) -m profiler --gpu $(GPU) $(foreach m,$(subst $(comma), ,$(MODEL)),--model $(m))

traces: install
	$(PY) -m simulator.datasets traces --dest traces $(if $(TRACES_SRC),--source $(TRACES_SRC))
	$(PY) -m simulator.datasets helix-arrivals --dest traces/helix_lengths $(if $(TRACES_SRC),--source $(TRACES_SRC)/helix_lengths)

helix-profiles: install
	$(PY) -m simulator.datasets helix-profiles --dest $(HELIX_PROFILES) $(if $(PROFILES_SRC),--source $(PROFILES_SRC))

# Helix's stored Llama-2-70B placements (its Gurobi MILP's, Swarm's, Petals'), for experiments/fidelity_helix.py.
helix-placements: install
	$(PY) -m simulator.datasets helix-placements --dest $(HELIX_PLACEMENTS) $(if $(PLACEMENTS_SRC),--source $(PLACEMENTS_SRC))

# The artifact's hand-written SP pipelines (3-region); SP_PLACEMENTS_SRC: a local folder instead of the download.
SP_PLACEMENTS_SRC ?=
helix-sp-placements: install
	$(PY) -m simulator.datasets helix-sp-placements --dest $(HELIX_PLACEMENTS) $(if $(SP_PLACEMENTS_SRC),--source $(SP_PLACEMENTS_SRC))

data: traces helix-profiles helix-placements
	-@$(MAKE) --no-print-directory helix-sp-placements

# The main job on an embedded default: Helix's 24-GPU cluster serving Llama-2-70B on the Azure conv trace.
# Falls back to a synthetic Azure-like trace and the roofline cost model when the data cannot be fetched.
DEMO_RATE ?= 0.6
demo: install
	-@$(MAKE) --no-print-directory traces
	-@$(MAKE) --no-print-directory helix-profiles
	$(SIM) run --cluster helix-single24 --model llama2-70b --policy separate \
	  $(if $(wildcard traces/AzureLLMInferenceTrace_conv.csv),--trace azure_conv,--trace synthetic:conv) \
	  $(if $(wildcard $(HELIX_PROFILES)/llama2_70b),--profiles $(HELIX_PROFILES)) \
	  --rate $(DEMO_RATE) --duration 1800 --warmup 300 --seed 0 --out results/demo

# The simulator against real execution on this machine: profile the CPU, serve the Azure conv trace
# (lengths x 0.1) live on two CPU workers (a 2-stage pipeline over gloo), simulate the same, compare.
VALIDATE_TRACE = $(if $(wildcard traces/AzureLLMInferenceTrace_conv.csv),azure_conv,synthetic:conv)
validate: install-torch
	-@$(MAKE) --no-print-directory traces >/dev/null 2>&1
	$(SIM) validate separate+random helix hexgen2 --cluster cpu2 --model llama-cpu-small \
	  --trace $(VALIDATE_TRACE) --length-scale 0.1 --duration 40 --warmup 10 --seed 0 --out results/validate

# The papers' tables next to the published numbers (experiments/README.md); cached, so a rerun is quick.
experiments: install
	$(MAKE) --no-print-directory data
	$(PY) -m experiments

test: install-torch
	-@$(MAKE) --no-print-directory traces helix-profiles >/dev/null 2>&1
	$(PY) -m pytest

bench: install-torch
	-@$(MAKE) --no-print-directory traces helix-profiles >/dev/null 2>&1
	$(PY) -m benchmarks.sim_speed
	$(PY) -m benchmarks.milp_bench
	$(PY) -m benchmarks.profiler_accuracy
	$(PY) -m benchmarks.hexgen2_planner
	$(PY) -m benchmarks.live_validation
	$(PY) -m benchmarks.serving_model_accuracy --grid full
	$(PY) -m benchmarks.helix_vs_baselines

lint: install
	$(VENV)/bin/ruff check simulator profiler runtime experiments tests benchmarks

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis *.egg-info
