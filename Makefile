# The two front-door commands are `make run` and `make test`; both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NPM_STAMP := frontend/node_modules/.installed
FRONTEND_SRC := $(shell find frontend/src frontend/public frontend/index.html frontend/vite.config.js frontend/package.json -type f 2>/dev/null)

.PHONY: run test test-py test-frontend lint format bench screenshots frontend venv native chromium clean

# The venv, the dashboard's build and the compiled core side by side, then the system.
run:
	@$(MAKE) --no-print-directory -j2 --output-sync=target venv frontend native
	$(BIN)/pulseboard up

# Two jobs side by side first: the Python env installs while the dashboard's packages install and
# its tests run (on a fresh clone the vitest run costs no extra time); then lint and pytest, which
# gets the machine to itself (its tests start servers and browsers and wait on them with deadlines).
test:
	@$(MAKE) --no-print-directory -j2 --output-sync=target venv frontend chromium test-frontend native
	@$(MAKE) --no-print-directory lint test-py

# Parallel workers, each with its own embedded Redis (tests/conftest.py); most tests wait on
# servers and browsers, so more workers than cores pays. On 2 cores from a fresh clone 4 and 6
# workers came out the same (227-246 s), so 4. Override: make test PYTEST_WORKERS=0.
# Containers often set PYTHONDONTWRITEBYTECODE: every xdist worker and each of the ~110 server
# processes the suite starts would then compile the project and its tests again (a worker's
# collection: 6.0 s of CPU against 2.4 s from __pycache__, which git ignores).
PYTEST_WORKERS ?= 4
test-py: venv native
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -n $(PYTEST_WORKERS) --maxschedchunk 1

test-frontend: $(NPM_STAMP)
	cd frontend && npm run lint
	cd frontend && npm test

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The README's pictures: the browser tests that take them, told to write into docs/ (a plain test
# run writes them to its temporary folder, so it never rewrites the committed files).
screenshots: venv frontend chromium
	PULSEBOARD_SCREENSHOTS=docs $(BIN)/pytest tests/e2e -p no:randomly

# The benchmark (docs/benchmarks.md): a development tool, not a `pulseboard` subcommand. Options
# through BENCH_ARGS, e.g. make bench BENCH_ARGS='--quick --only realtime'.
bench: venv frontend native
	$(BIN)/python -m bench $(BENCH_ARGS)

venv: $(STAMP)

# The core's hot modules compiled with mypyc into build/native/ (backend/core/native.py): nothing
# to do while the build matches the sources; where it cannot be built the core runs as Python.
# Its own small environment (build/native-env), so it does not wait for the venv.
native:
	@$(PYTHON) scripts/build_native.py

# uv installs the same packages in half pip's time from a fresh clone (14 s against 27 s on 2 cores:
# pip spends most of it matching every file listed on the index pages). Plain pip where uv can't
# be had, e.g. behind a mirror only pip is configured for.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	($(BIN)/pip install --quiet --disable-pip-version-check uv \
	  && $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]') \
	  || $(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

frontend: frontend/dist/index.html

$(NPM_STAMP): frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	touch $@

frontend/dist/index.html: $(NPM_STAMP) $(FRONTEND_SRC)
	cd frontend && npm run build

chromium:
	@bash scripts/ensure-chromium.sh

clean:
	rm -rf $(VENV) build frontend/node_modules frontend/dist .pytest_cache .ruff_cache
