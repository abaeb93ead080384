# rtrl_rl: `make train` and `make test` work on a fresh machine (they run `setup` first).
PY      := .venv/bin/python
STAMP   := .venv/.installed
APT_PKGS := libqt5gui5

CLAIM ?= all

.PHONY: setup lint format test test-long test-slurm reproduce-small train bench-cells bench-learner bench-envs bench-ppo bench-rtu bench-truncation bench-system bench-gpu-smoke clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "note: not root; make sure these Debian packages are installed: $(APT_PKGS)"; fi
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Two pytest workers (pytest-xdist), each taking whole files (a file's module fixtures run once) in the
# order of tests/conftest.py (the longest first): most in-process tests compile on one core, so one
# worker alone leaves the other core idle.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The formatter and the linter (ruff; settings in pyproject.toml): `make format` rewrites, `make lint` checks.
lint: setup
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test-long: setup
	$(PY) -m pytest -q -m long

# The SLURM backend on a real SLURM: a private cluster (two slurmd) on this machine (launch/local_slurm.sh,
# which installs slurm and munge with apt when root), stopped again however the tests end.
test-slurm: setup
	trap 'bash launch/local_slurm.sh stop' EXIT; trap 'exit 130' INT TERM; \
	bash launch/local_slurm.sh start && $(PY) -m pytest -q -m slurm

# The papers' claims at reduced scale on this machine (launch/reproduce.py): runs, figures, tables and
# verdicts in results/<claim>/. One claim: make reproduce-small CLAIM=irie_m
reproduce-small: setup
	$(PY) -m launch.reproduce --claim=$(CLAIM)

bench-cells: setup
	$(PY) -m bench.bench_cells

bench-learner: setup
	$(PY) -m bench.bench_learner

bench-envs: setup
	$(PY) -m bench.bench_envs

bench-ppo: setup
	$(PY) -m bench.bench_ppo --num_envs=1,8,64

bench-rtu: setup
	$(PY) -m bench.bench_rtu

# RTRL's cost against T-BPTT's truncation T (issue 16, claim 3; `make reproduce-small CLAIM=rtu_cost` too)
bench-truncation: setup
	$(PY) -m bench.bench_truncation

bench-system: setup
	$(PY) -m bench.bench_system

# The GPU kit (bench/gpu/run.sh) at tiny sizes on this CPU: every step's plumbing, a few minutes.
bench-gpu-smoke: setup
	bash bench/gpu/run.sh --smoke

clean:
	rm -rf .venv .pytest_cache

train: setup
	$(PY) -m rtrl_rl.train --config=configs/default.py
