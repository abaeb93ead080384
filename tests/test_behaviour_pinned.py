"""Training results pinned across refactors: four deterministic runs end with recorded parameters.

Recorded (tests/golden/behaviour/) from the code before the training layer's redesign (issue 17):
the fully-jitted loop with IMPALA (RTRL eLSTM) and with PPO (RTRL RTU) on JAX envs, online TD
prediction, and PPO acting on host envs (backend "sync"), each a few updates on one CPU device, run
as a user runs them (`python -m rtrl_rl.train`); and the actors backend's halves (an actor's
rollouts and episode statistics, the learner's updates), which run asynchronously in a real run.
A change to the training layer that alters what any of them computes fails here. On the recording
machine the parameters are bitwise equal (`params_crc32`); another CPU may vectorise XLA's reductions differently, so the assertion allows
float32 rounding (1e-5 relative) rather than a checksum.

Re-record (only for an intended change of behaviour, saying why in the commit):
    RTRL_RL_RECORD_GOLDEN=1 python -m pytest tests/test_behaviour_pinned.py
"""

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from rtrl_rl.io import read_metrics
from rtrl_rl.io.checkpoint import Checkpointer
from tests._multiprocess import ROOT, device_env

GOLDEN = os.path.join(ROOT, "tests", "golden", "behaviour")
RECORD = os.environ.get("RTRL_RL_RECORD_GOLDEN") == "1"

RUNS = {  # name: flags of `python -m rtrl_rl.train` (3 updates each)
  "anakin_impala_elstm": [
    "--config=configs/default.py:elstm",
    "--config.env.id=jax/cue-memory",
    "--config.system.backend=anakin",
    "--config.agent.unroll_length=10",
    "--config.agent.batch_size=8",
    "--config.agent.network.hidden_size=16",
    "--config.agent.total_env_steps=240",
    "--config.system.log_every_updates=2",  # not what it computes: which rows it writes
  ],
  "anakin_ppo_rtu": [
    "--config=configs/rtu_popgym.py",
    "--config.env.id=jax/cue-memory",
    "--config.system.backend=anakin",
    "--config.agent.num_envs=8",
    "--config.agent.rollout_length=8",
    "--config.agent.num_epochs=1",
    "--config.agent.num_minibatches=2",
    "--config.agent.minibatch_size=32",
    "--config.agent.network.hidden_size=8",
    "--config.agent.network.mlp_hidden_sizes=(8,)",
    "--config.agent.network.head_hidden_sizes=(8,)",
    "--config.agent.total_env_steps=192",
  ],
  "prediction_rtu": [
    "--config=configs/rtu_trace_conditioning.py:cell=rtu_nonlinear,steps=600,chunk=200,"
    "window=200,seeds=2,hidden=4"
  ],
  "sync_ppo_popgym": [
    "--config=configs/rtu_popgym.py:env_family=numpy",
    "--config.agent.num_envs=8",
    "--config.agent.rollout_length=8",
    "--config.agent.num_epochs=1",
    "--config.agent.num_minibatches=2",
    "--config.agent.minibatch_size=32",
    "--config.agent.network.hidden_size=8",
    "--config.agent.network.mlp_hidden_sizes=(8,)",
    "--config.agent.network.head_hidden_sizes=(8,)",
    "--config.agent.total_env_steps=192",
  ],
}


def _final_params(run_dir: str) -> list[np.ndarray]:
  """The parameters of the run's final checkpoint, in the order of `jax.tree.leaves(params)`."""
  with Checkpointer(os.path.join(run_dir, "checkpoints")) as ckpt:
    leaves, _ = ckpt.restore(ckpt.latest_step())
  return [np.asarray(v) for path, v in leaves.items() if ".params[" in path or path.endswith(".params")]


def _start(run_dir: str, flags: list, log: str) -> subprocess.Popen:
  with open(log, "w") as out:
    return subprocess.Popen(
      [sys.executable, "-m", "rtrl_rl.train", f"--run_dir={run_dir}", *flags, "--config.system.plot=False"],
      cwd=ROOT,
      stdout=out,
      stderr=subprocess.STDOUT,
      env=device_env(1),
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The four runs, started together (each compiles on one core; what they compute does not depend
  on it): {name: (run dir, process, its output file)}."""
  root = tmp_path_factory.mktemp("pinned")
  procs = {}
  for name, flags in RUNS.items():
    run_dir, log = str(root / name), str(root / f"{name}.log")
    procs[name] = (run_dir, _start(run_dir, flags, log), log)
  yield procs
  for _, proc, _ in procs.values():
    if proc.poll() is None:
      proc.kill()
      proc.wait()


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_run_ends_with_the_recorded_parameters(runs, name):
  run_dir, proc, log = runs[name]
  try:
    proc.wait(timeout=600)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  assert proc.returncode == 0, open(log).read()[-3000:]
  summary = json.loads(open(os.path.join(run_dir, "summary.json")).read())
  params = _final_params(run_dir)
  assert params and all(np.all(np.isfinite(p)) for p in params)
  crc = 0
  for p in params:
    crc = zlib.crc32(np.ascontiguousarray(p).tobytes(), crc)
  assert summary.get("params_crc32", crc) == crc  # the summary describes the final checkpoint
  golden = os.path.join(GOLDEN, f"{name}.npz")
  if RECORD:
    os.makedirs(GOLDEN, exist_ok=True)
    np.savez(golden, *params, params_crc32=np.int64(crc))
    pytest.skip(f"recorded {golden} (params_crc32 {crc})")
  with np.load(golden) as g:
    expected = [g[f"arr_{i}"] for i in range(len(g.files) - 1)]
    recorded = int(g["params_crc32"])
  assert [p.shape for p in params] == [e.shape for e in expected]
  for i, (p, e) in enumerate(zip(params, expected)):
    np.testing.assert_allclose(p, e, rtol=1e-5, atol=1e-7, err_msg=f"{name}: parameter leaf {i}")
  if crc != recorded:  # rounding of another CPU's kernels (module doc): say so
    print(f"{name}: params_crc32 {crc} != recorded {recorded}; equal within 1e-5")


@pytest.mark.parametrize("name,updates", [("anakin_impala_elstm", [2, 3]), ("anakin_ppo_rtu", [1, 2, 3])])
def test_metrics_rows_follow_updates_when_log_every_updates_is_set(runs, name, updates):
  """`system.log_every_updates=n`: a row at every n-th update and at the last, whatever the run's
  speed (the RTU paper's PPO configs: n = 1), each with the window's episode statistics."""
  run_dir, proc, _ = runs[name]
  proc.wait(timeout=600)
  rows = read_metrics(run_dir)
  assert [row["updates"] for row in rows] == updates
  assert all("episode_return" in row and "episodes" in row for row in rows)


def test_the_actors_backend_halves_compute_the_recorded_rollouts_and_updates(tmp_path):
  """The actors backend is asynchronous (which parameters an actor acts with depends on timing), so
  its runs are not pinned whole; its halves are: an actor's collector on host env pools, its
  episode statistics, and the learner's updates, alternated (tests/_actors_halves.py). Recorded
  from the code before issue 17's redesign (3fad32c), which computes the same values bitwise."""
  out = str(tmp_path / "halves.npz")
  proc = subprocess.run(
    [sys.executable, os.path.join("tests", "_actors_halves.py"), out],
    cwd=ROOT,
    env=device_env(1),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  golden = os.path.join(GOLDEN, "actors_impala_elstm.npz")
  with np.load(out) as got:
    got = {k: got[k] for k in got.files}
  if RECORD:
    np.savez(golden, **got)
    pytest.skip(f"recorded {golden}")
  with np.load(golden) as g:
    want = {k: g[k] for k in g.files}
  assert got.keys() == want.keys()
  # CartPole's returns are whole numbers of steps: any change to acting or the tracker shows
  np.testing.assert_array_equal(got.pop("episode_returns"), want.pop("episode_returns"))
  assert len(want) > 3
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=f"parameter leaf {k}")
