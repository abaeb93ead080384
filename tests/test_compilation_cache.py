"""The persistent compilation cache of training runs (`system.compilation_cache`,
`trainer.use_compilation_cache`): compiled programs land in the directory for later starts, the
environment's JAX_COMPILATION_CACHE_DIR wins, "" turns it off, an unusable directory is reported and
the run goes on without it, and `prepare` turns it on before anything compiles."""

import logging
import os
import subprocess
import sys

from rtrl_rl import experiment
from rtrl_rl.system import trainer
from tests._multiprocess import ROOT

SCRIPT = """
import os, sys
import jax, jax.numpy as jnp
from rtrl_rl.system import trainer
used = trainer.use_compilation_cache(sys.argv[1])
min_seconds = jax.config.jax_persistent_cache_min_compile_time_secs
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # keep this one, however fast
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
print(used, os.environ["JAX_COMPILATION_CACHE_DIR"], os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"], min_seconds)
"""


def test_compiled_programs_are_kept_in_the_configured_directory(tmp_path):
  env = {
    k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))
  }
  cache = tmp_path / "cache" / "jax"
  out = subprocess.run(
    [sys.executable, "-c", SCRIPT, str(cache)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 0, out.stderr[-2000:]
  used, inherited, limit, min_seconds = out.stdout.split()
  assert used == inherited == str(cache)  # the processes the run starts inherit it
  assert int(limit) == trainer.COMPILATION_CACHE_MAX_BYTES  # a limit: JAX locks the cache's files
  assert float(min_seconds) == trainer.COMPILATION_CACHE_MIN_SECONDS
  assert any(name.endswith("-cache") for name in os.listdir(cache)), os.listdir(cache)


def test_the_environment_wins_and_an_empty_path_turns_the_cache_off(monkeypatch, tmp_path):
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "theirs"))
  assert trainer.use_compilation_cache(str(tmp_path / "ours")) == str(tmp_path / "theirs")
  assert not (tmp_path / "ours").exists()
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
  assert trainer.use_compilation_cache("") is None
  assert "JAX_COMPILATION_CACHE_DIR" not in os.environ


def test_an_unusable_directory_is_reported_and_the_run_goes_on_without_it(monkeypatch, tmp_path, caplog):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with caplog.at_level(logging.WARNING):
    assert trainer.use_compilation_cache(str(blocker / "cache")) is None
  assert "system.compilation_cache=" in caplog.text and "'' to turn the cache off" in caplog.text
  assert "JAX_COMPILATION_CACHE_DIR" not in os.environ


def test_prepare_turns_the_cache_on_before_anything_compiles(monkeypatch):
  calls = []
  monkeypatch.setattr(trainer, "use_compilation_cache", calls.append)
  monkeypatch.setattr(experiment, "validate", lambda *a, **k: calls.append("validate"))
  config = experiment.base_config("ppo")
  config.system.compilation_cache = "/somewhere/else"
  trainer.prepare(config)
  assert calls == ["/somewhere/else", "validate"]
