PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all wheel-check lint bench clean chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# constraints.txt pins the torch/torchvision this project is tested with; pyproject.toml states the range
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/adv2 demo

# the report's browser test renders in Debian's chromium; installed here when missing (skipped if that fails)
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  ( $$SUDO apt-get install -y -q chromium || ( $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium ) ) \
	    >/dev/null 2>&1 || echo "note: could not install chromium; the report's browser test will be skipped"; }

# the fast suite (a few minutes): everything but the tests marked slow
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=15

# everything, slow tests included (quality runs, subprocess CLI, torchrun, resume, browser): CI runs this
test-all: $(STAMP) chromium
	$(BIN)/python -m pytest -q --durations=15

# the built wheel, installed with its dependencies into a fresh venv (needs a package index for torch & co.),
# runs from outside the repository
WHEEL_CHECK := build/wheel-check
wheel-check: $(STAMP)
	rm -rf $(WHEEL_CHECK)
	$(BIN)/python -m build --wheel --outdir $(WHEEL_CHECK)/dist .
	$(PY) -m venv $(WHEEL_CHECK)/venv
	$(WHEEL_CHECK)/venv/bin/pip install -q -c constraints.txt $(WHEEL_CHECK)/dist/adv2-*.whl
	cd $(WHEEL_CHECK) && venv/bin/python -c "import adv2, sys; p = adv2.__file__; print(p); sys.exit(not p.startswith('$(CURDIR)/$(WHEEL_CHECK)/venv/'))"
	cd $(WHEEL_CHECK) && venv/bin/adv2 list
	cd $(WHEEL_CHECK) && venv/bin/adv2 demo --fast --n 2 --out run --no-progress

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
