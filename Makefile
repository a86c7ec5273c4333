# `make demo` and `make test` work on a fresh clone: each creates .venv if missing and installs into it.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# PyPI serves only the CUDA build of torch for Linux x86-64 (about 4 GB with its nvidia-* and triton wheels).
# Where PyTorch's own index is reachable, `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs
# the CPU builds of torch and torchvision from it first (see README: Set-up cost).
TORCH_INDEX ?=

.PHONY: demo test test-all docs completions clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The runtime alone for the demo; the dev extra (pytest, linters, TensorBoard, MLflow) and the test plugin for tests.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet torch torchvision --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml plugins/vqtool-tinyvgg/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e plugins/vqtool-tinyvgg
	touch $(VENV)/.installed $@

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/vqtool train

test: $(VENV)/.installed-dev
	$(BIN)/python -m pyflakes vqtool tests benchmarks plugins
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# Slow integration tests too, and the real-asset tests when ../shared/assets exists.
test-all: $(VENV)/.installed-dev
	VQTOOL_TEST_ASSETS=$${VQTOOL_TEST_ASSETS:-$(CURDIR)/../shared/assets} $(BIN)/python -m pytest -q -m ""

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or anchor fails the build.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site .pytest_cache

# Regenerate the shell completion scripts, the packaged model-name list they complete from, and the catalog
# `vqtool models` and `datasets` list from without importing torch.
completions: $(VENV)/.installed-dev
	VQTOOL_PLUGINS=none $(BIN)/python -c "from vqtool.commands.completion import write_model_names; write_model_names('vqtool/model_names.txt'); from vqtool.commands.completion import write_catalog; write_catalog('vqtool/catalog.json')"
	for shell in bash zsh fish; do _VQTOOL_COMPLETE=$${shell}_source $(BIN)/vqtool > completions/vqtool.$$shell; done
