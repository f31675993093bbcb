PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check transformer tests bench

test: setup lint
	$(BIN)/pytest -n auto --dist loadfile  # one worker per core; a test file's tests share a worker

demo: setup
	$(BIN)/python -m transformer.demo

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
