# spkadv: make setup | reproduce [PROFILE=default] | results | test | lab | bench | lint
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default
STAMP := $(VENV)/.installed
# pip over a flaky network: each install is retried whole, after 30 s, 1, 2, 4 min (an outage of
# the package host can last minutes), and pip itself retries connections and resumes interrupted
# downloads (pip >= 25.1)
PIP_TRIES ?= 5
PIP_NET := --retries 10 --timeout 60
define pip_install
for try in $$(seq 1 $(PIP_TRIES)); do \
  $(PY) -m pip install --quiet $(PIP_NET) $(1) && break; \
  if [ $$try = $(PIP_TRIES) ]; then echo 'error: pip install $(1) failed $(PIP_TRIES) times; check the network and rerun make setup (downloaded wheels stay in the pip cache)' >&2; exit 1; fi; \
  wait=$$((30 << (try - 1))); echo "pip install failed (try $$try of $(PIP_TRIES)); retrying in $$wait s" >&2; sleep $$wait; \
done
endef
DEBIAN_PACKAGES := flite ffmpeg espeak-ng chromium chromium-driver

.PHONY: setup reproduce study test test-lib test-notebooks smoke-run lab bench lint clean-runs

$(STAMP): requirements.txt requirements-test.txt requirements-test-nodeps.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (or run make PYTHON=/path/to/python3.11 ...)"; exit 1; }
	@missing=""; for pkg in $(DEBIAN_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null || \
	      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; \
	  else \
	    echo "warning: missing Debian packages:$$missing"; \
	    echo "  run: sudo apt-get install -y$$missing"; \
	  fi; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(call pip_install,--upgrade "pip>=25.1")
	@$(call pip_install,--resume-retries 10 -r requirements.txt)
	@$(call pip_install,--resume-retries 10 -r requirements-test.txt -c requirements.txt)  # test-only (tests/test_parity.py)
	@$(call pip_install,--resume-retries 10 --no-deps -r requirements-test-nodeps.txt)  # its reference implementations
	@$(call pip_install,--no-deps -e .)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (spkadv)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)  ## venv, pinned packages, Debian packages, offline model assets
	$(PY) -m spkadv.data.assets fetch --profile default

reproduce: setup  ## the whole paper on PROFILE (default: the embedded offline default), then its offline report
	$(PY) -m spkadv.run.pipeline --profile $(PROFILE) --report

STUDY ?= 90_attack_study
study: setup  ## a study of notebooks/studies/ (STUDY=90_attack_study | 91_joint_robustness | 92_transfer | 93_blackbox | 94_protect_settings | 95_code_predictor | 96_training_settings) on PROFILE, after its 00_data_prep
	$(PY) -m spkadv.run.pipeline --profile $(PROFILE) --only 00_data_prep
	$(PY) -m spkadv.run.pipeline --profile $(PROFILE) --only $(STUDY)

.PHONY: results
results: $(STAMP)  ## docs/results/<profile>.json from each finished full run, then docs/results.md and README's generated tables
	$(PY) -m spkadv.report.results

.PHONY: report
report: $(STAMP)  ## runs/$(PROFILE)/report/index.html from a finished run (offline HTML)
	$(PY) -m spkadv.report.build --profile $(PROFILE)

test: setup test-lib test-notebooks  ## the smoke pipeline, library tests + every notebook and study through nbval (smoke defaults)

# The smoke pipeline into runs/smoke: the tests of an executed run (clean executed notebooks, the
# report in a browser, the report of real outputs) read it. Stages still fresh (same parameters,
# notebook and library code) are skipped, so a second `make test` reuses the run.
smoke-run: setup
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(PY) -m spkadv.run.pipeline --profile smoke

test-lib: $(STAMP) smoke-run
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(PY) -m pytest tests

# nbval runs the notebooks in runs/nbval/, apart from the pipeline's runs/smoke
test-notebooks: $(STAMP)
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 SPKADV_RUNS=$(CURDIR)/runs/nbval $(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

lab: setup  ## JupyterLab on the notebooks with the project's kernel
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

bench: setup  ## benchmarks: figures printed and written to runs/bench/
	$(PY) -m benchmarks.run_all

lint: $(STAMP)  ## ruff check and format check of the library, tests, benchmarks and notebooks
	$(VENV)/bin/ruff check lib tests benchmarks notebooks
	$(VENV)/bin/ruff format --check lib tests benchmarks notebooks
