PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/adv2 demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/zoo.py
	$(BIN)/python benchmarks/quality.py --model shapes-resnet
	$(BIN)/python benchmarks/quality.py --model shapes-densenet
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/surrogate.py
	$(BIN)/python benchmarks/rts.py
	$(BIN)/python benchmarks/aid.py
	$(BIN)/python benchmarks/stadv.py --model shapes-resnet
	$(BIN)/python benchmarks/stadv.py --model shapes-densenet
	$(BIN)/python benchmarks/shards.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
