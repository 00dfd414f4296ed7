# The few commands people type. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/xtc: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel (a looser spec pulls several GB of CUDA builds)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,bench]"
	touch $(BIN)/xtc

install: $(BIN)/xtc

# A short compression run of MiniLM on MRPC; prints the teacher's and the compressed model's dev
# metric side by side. The local copies beside the checkout come first (this project's machines have
# no hub access); without them, the hub's model and GLUE dataset.
SHARED ?= ../shared
demo: install
	@if [ -d "$(SHARED)/models/all-MiniLM-L6-v2" ] && [ -d "$(SHARED)/glue" ]; then \
	  echo "demo: local model and data from $(SHARED)"; \
	  $(BIN)/xtc compress --recipe recipes/demo.yaml --model $(SHARED)/models/all-MiniLM-L6-v2 \
	    --glue-dir $(SHARED)/glue --output runs/demo --overwrite; \
	else \
	  echo "demo: no $(SHARED) here: the hub's sentence-transformers/all-MiniLM-L6-v2 and nyu-mll/glue"; \
	  $(BIN)/pip install -q "datasets>=2.19" && \
	  $(BIN)/xtc compress --recipe recipes/demo.yaml --model sentence-transformers/all-MiniLM-L6-v2 \
	    --glue-dir hub --output runs/demo --overwrite; \
	fi

test: install
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info
