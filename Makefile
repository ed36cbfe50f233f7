PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/adv2 demo

# the report's browser test renders in Debian's chromium; installed here when missing (skipped if that fails)
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  ( $$SUDO apt-get install -y -q chromium || ( $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium ) ) \
	    >/dev/null 2>&1 || echo "note: could not install chromium; the report's browser test will be skipped"; }

test: $(STAMP) chromium
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
	$(BIN)/python benchmarks/mask_pointing.py
	$(BIN)/python benchmarks/aid.py
	$(BIN)/python benchmarks/stadv.py --model shapes-resnet
	$(BIN)/python benchmarks/stadv.py --model shapes-densenet
	$(BIN)/python benchmarks/shards.py
	$(BIN)/python benchmarks/captum_methods.py
	$(BIN)/python benchmarks/audit.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
