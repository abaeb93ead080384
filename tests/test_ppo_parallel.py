"""Data-parallel PPO (rtrl_rl/agents/ppo/learning.py, module doc "Data parallelism"): one update on
4 forced CPU devices equals the single-device update with the same minibatch composition on the same
global buffer (stale, fresh, and stale with 2-step sequence minibatches); 2 processes x 2 devices (gloo) keep bitwise-identical parameters.
The runs are subprocesses (XLA_FLAGS and jax.distributed must be set before JAX starts), all started
at once by one fixture so that their compilations overlap."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from rtrl_rl.agents import ppo
from tests._multiprocess import ROOT, assert_close, device_env, free_port, load_prefixed

WORKER = os.path.join(ROOT, "tests", "_ppo_parallel_worker.py")
# Optimisation level 0 of the CPU backend compiles about a third faster; every process uses the same
# flags, so the comparisons are between the same codegen.
FAST_COMPILE = "--xla_backend_optimization_level=0"


def _wait(procs):
  errs = []
  for p in procs:
    try:
      _, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      p.kill()
      _, err = p.communicate()
    errs.append((p.returncode, err[-4000:]))
  assert all(rc == 0 for rc, _ in errs), errs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Start the 4-device run and the two 2-device processes together; returns their output files."""
  tmp = tmp_path_factory.mktemp("ppo_par")
  devices = str(tmp / "devices.npz")
  procs = {
    "devices": [
      subprocess.Popen(
        [sys.executable, WORKER, "devices", devices],
        env=device_env(4, FAST_COMPILE),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    ]
  }
  port = free_port()
  outs = [str(tmp / f"proc{i}.npz") for i in range(2)]
  procs["multiprocess"] = [
    subprocess.Popen(
      [sys.executable, WORKER, "multiprocess", outs[i], str(port), "2", str(i)],
      env=device_env(2, FAST_COMPILE),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  yield {"devices": devices, "multiprocess": outs, "procs": procs}
  for group in procs.values():
    for p in group:
      if p.poll() is None:
        p.kill()
        p.communicate()


@pytest.mark.parametrize("gradient", ["stale", "fresh", "sequence"])
def test_update_on_4_devices_equals_single_device_same_minibatches(runs, gradient):
  _wait(runs["procs"]["devices"])
  path = runs["devices"]
  with np.load(path) as f:
    assert int(f["num_devices"]) == 4
  mesh = load_prefixed(path, f"{gradient}/mesh1/")
  single = load_prefixed(path, f"{gradient}/single1/")
  assert_close(mesh, single, rtol=1e-5)
  assert_close(
    load_prefixed(path, f"{gradient}/mesh1_metrics/"),
    load_prefixed(path, f"{gradient}/single1_metrics/"),
    rtol=1e-5,
  )
  # The update moved the parameters (the comparison is not vacuous).
  initial = load_prefixed(path, "initial/")
  assert initial.keys() == single.keys()
  assert all(not np.allclose(initial[k], single[k]) for k in single if "log_std" not in k)


def test_two_processes_with_gloo_keep_identical_parameters(runs):
  _wait(runs["procs"]["multiprocess"])
  p0, p1 = (load_prefixed(out, "stale/final/") for out in runs["multiprocess"])
  with np.load(runs["multiprocess"][0]) as f:
    assert int(f["num_devices"]) == 4  # 2 processes x 2 devices, one global mesh
  assert p0.keys() == p1.keys() and p0
  for k in p0:
    np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)  # bitwise identical replicas
  # ... and equal to the 1 process x 4 devices run of the same global buffers.
  _wait(runs["procs"]["devices"])
  assert_close(p0, load_prefixed(runs["devices"], "stale/final/"), rtol=1e-5)


def test_minibatch_composition():
  """Each epoch visits every step of the buffer exactly once; with D shards, minibatch j holds
  minibatch_size / D steps of each shard's envs; one shard is the plain permutation."""
  key = jax.random.PRNGKey(3)
  t, b, num_mb, mb = 4, 8, 4, 8
  plain = np.asarray(ppo.global_minibatch_indices(key, t, b, num_mb, mb))
  np.testing.assert_array_equal(plain.ravel(), np.asarray(jax.random.permutation(key, t * b)))
  for d in (2, 4):
    idx = np.asarray(ppo.global_minibatch_indices(key, t, b, num_mb, mb, num_shards=d))
    assert idx.shape == (num_mb, mb)
    np.testing.assert_array_equal(np.sort(idx.ravel()), np.arange(t * b))
    env_shard = (idx % b) // (b // d)
    for row in env_shard:
      np.testing.assert_array_equal(np.bincount(row, minlength=d), [mb // d] * d)
  with pytest.raises(ValueError, match="num_envs"):
    ppo.global_minibatch_indices(key, t, 6, 3, 8, num_shards=4)
