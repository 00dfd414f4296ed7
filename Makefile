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

# A short compression run on the local MiniLM and MRPC; prints the teacher's and the compressed
# model's dev metric side by side.
demo: install
	$(BIN)/xtc compress --recipe recipes/demo.yaml --output runs/demo --overwrite

test: install
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info
