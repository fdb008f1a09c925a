# The README's commands. Each one creates .venv with the project installed when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-postgresql lint bench clean browser constraints editor

# Runtime packages at the versions of constraints.txt, as in the image (Dockerfile).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]' || { \
	  echo "pyproject.toml asks for versions constraints.txt excludes: run make constraints" >&2; \
	  exit 1; }
	touch $(STAMP)

# After a change of pyproject.toml's runtime dependencies: install what they resolve to, free
# of the old pins, and write those down.
constraints:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python deploy/constraints.py > constraints.txt
	touch $(STAMP)

# `make run ARGS='--port 7300 --api-port 8090'` passes flags on to `taskrunner dev`.
run: $(STAMP)
	$(BIN)/taskrunner dev $(ARGS)

# The browser tests drive Debian's Chromium and its driver (tests/browser.py): installed here
# when missing (as root, as in CI; about 100 MB to download once), never fetched at run time.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else \
	    echo "the browser tests need Debian's chromium and chromium-driver:" \
	      "sudo apt-get install chromium chromium-driver" >&2; \
	  fi; }

# The editor tests (tests/editor) run yaml-language-server, the language server of VS Code's
# YAML extension and Neovim's yamlls, pinned with its dependencies in tests/editor's lock file:
# installed here from npm (needs Debian's nodejs and npm), never fetched at run time.
EDITOR_STAMP := tests/editor/node_modules/.installed
editor: $(EDITOR_STAMP)
$(EDITOR_STAMP): tests/editor/package-lock.json
	@command -v npm >/dev/null || { \
	  echo "the editor tests need node and npm: sudo apt-get install nodejs npm" >&2; exit 1; }
	npm ci --prefix tests/editor --no-audit --no-fund --loglevel=error
	touch $(EDITOR_STAMP)

test: $(STAMP) browser editor
	$(BIN)/python -m pytest -q

# `make test` runs the database's own tests (tests/db, idempotency, webhooks) on SQLite and on
# PostgreSQL, and the rest of the API's on SQLite; this runs all of the API's on PostgreSQL.
test-postgresql: $(STAMP) browser
	TASKRUNNER_TEST_DATABASE=postgresql $(BIN)/python -m pytest -q tests/api tests/cli tests/db

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
