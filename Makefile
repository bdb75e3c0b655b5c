# The two commands of the README: `make demo` (the main job end to end, locally, no GPU)
# and `make test` (what CI runs). Everything else is a helper of those two.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test lint unit bench ffmpeg venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-torch.txt
	@echo "creating $(VENV) with the pinned requirements (once; about a minute, more on a slow link)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	$(VENV)/bin/pip install -q --no-deps -r requirements-torch.txt
	touch $@

# ffmpeg/ffprobe are system binaries; install them where we can (root + apt), else say how.
ffmpeg:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing ffmpeg with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	else \
		echo "ffmpeg and ffprobe are required: install them (e.g. 'sudo apt-get install ffmpeg')" >&2; exit 1; \
	fi

demo: venv ffmpeg
	$(PY) -m localdev.demo

test: venv ffmpeg lint
	$(VENV)/bin/pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/lint_infra.sh

bench: venv ffmpeg
	@echo "make bench: whole jobs on the local stack, 3 per video (a few minutes); progress on stderr"
	$(PY) -m bench.stage_bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .work
