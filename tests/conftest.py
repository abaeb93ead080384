"""Settings of a test session that make the suite faster without changing what it runs.

* A persistent JAX compilation cache for this session only (a fresh temporary directory, removed
  at the end), shared with every subprocess the tests start: the trainer tests start many
  processes that compile the same programs (a trainer subprocess starts in ~17 s instead of ~28 s
  when its programs are cached). Compilation is deterministic, so a cached executable is the one
  the process would have compiled. Entries are written under a file lock (the cache has a size
  limit, which turns the lock on), so concurrent processes never read a half-written entry.
* Optimisation level 0 of XLA's CPU backend in this process only (not in the subprocesses, which
  run the trainer as users do), unless the session selects the long learning tests: the default
  in-process tests are compile-bound (small float64 problems) and level 0 compiles ~20% faster,
  while the long tests are bound by execution, which level 0 slows. The tests compare results
  computed under the same flags.

* The files that run for minutes are collected first, so that `make test`'s two workers (pytest-xdist,
  whole files each) start them early and end together instead of one waiting on the other's last
  long file.

This runs before JAX is imported (it reads its configuration from the environment then).
"""

import os
import shutil
import tempfile

# One cache for the whole session: the workers of `pytest -n` (pytest-xdist) inherit the
# controller's directory through the environment; the process that made it removes it.
_OWN_CACHE = "RTRL_RL_TEST_JAX_CACHE" not in os.environ
_CACHE_DIR = (
  tempfile.mkdtemp(prefix="rtrl_rl_test_jax_cache_") if _OWN_CACHE else os.environ["RTRL_RL_TEST_JAX_CACHE"]
)
os.environ["RTRL_RL_TEST_JAX_CACHE"] = _CACHE_DIR


def pytest_configure(config):
  os.environ.update(
    JAX_COMPILATION_CACHE_DIR=_CACHE_DIR,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.3",  # skip the many tiny eager-mode programs
    JAX_COMPILATION_CACHE_MAX_SIZE=str(4 << 30),  # a limit enables the cache's file lock
  )
  markexpr = config.getoption("markexpr") or ""
  selects_long = "long" in markexpr and "not long" not in markexpr
  subprocess_flags = os.environ.get("XLA_FLAGS")
  if not selects_long:
    os.environ["XLA_FLAGS"] = f"{subprocess_flags or ''} --xla_backend_optimization_level=0".strip()
  import jax  # noqa: PLC0415 - after the variables above are set: jax reads them when imported

  jax.devices()  # the CPU backend starts now, with the flags above
  if subprocess_flags is None:
    os.environ.pop("XLA_FLAGS", None)
  else:
    os.environ["XLA_FLAGS"] = subprocess_flags


# The longest files (minutes on 2 cores, `--durations`), longest first; the others follow in their order.
_LONG_FILES = (
  "test_anakin_parallel.py",
  "test_trainer.py",
  "test_cells_exactness.py",
  "test_run_dir_trainer.py",
  "test_ppo.py",
  "test_behaviour_pinned.py",
  "test_envs_brax.py",
  "test_learning_reacher.py",
  "test_run_shm_stall.py",
  "test_evaluate.py",
)


def pytest_collection_modifyitems(session, config, items):  # pylint: disable=unused-argument
  rank = {name: i for i, name in enumerate(_LONG_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's order is kept


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
  if _OWN_CACHE:
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
