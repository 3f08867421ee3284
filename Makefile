PYTHON ?= python3
PIP := $(PYTHON) -m pip
CONFIG ?= configs/clark2020.yaml

.PHONY: install install-dev run test test-slow lint fixtures bench docs-examples clean

install:
	$(PIP) install -q -e .

install-dev:
	$(PIP) install -q -e '.[dev]'

## Install, run the seed study on the default config and print its summary.
run: install
	$(PYTHON) -m micromacro_sim run $(CONFIG) --summarize

## Install with the test extras, check the import layers and run the default (fast) test suite.
test: install-dev
	lint-imports
	$(PYTHON) -m pytest

## The slow Monte Carlo cross-checks (minutes).
test-slow: install-dev
	$(PYTHON) -m pytest -m slow

lint:
	ruff check micromacro_sim tests tools
	lint-imports

## Regenerate the R reference fixtures (needs Rscript with lavaan, lme4, glmmTMB, sandwich).
fixtures: install
	@command -v Rscript >/dev/null || { echo "Rscript not found: apt-get install r-base-core r-cran-lavaan r-cran-lme4 r-cran-glmmtmb r-cran-sandwich r-cran-jsonlite"; exit 1; }
	for f in tools/make_*_fixtures.py; do $(PYTHON) $$f || exit 1; done
	Rscript tools/r/bfi_fixture.R

## Time both engines, the CLI end to end (cold and warm) and (when Rscript is installed) the
## R pipeline; the run's figures go into BENCHMARKS.md between its bench markers.
bench: install
	$(PYTHON) -m micromacro_sim bench --markdown BENCHMARKS.md

## The committed example report of docs/examples/ordinal (an ordinal study: each method scored
## against its own estimand).
docs-examples: install
	$(PYTHON) -m micromacro_sim run configs/examples/ordinal.yaml --output results/example_ordinal --overwrite
	rm -rf docs/examples/ordinal
	$(PYTHON) -m micromacro_sim report results/example_ordinal --format md --output docs/examples/ordinal

clean:
	rm -rf build dist *.egg-info .pytest_cache
