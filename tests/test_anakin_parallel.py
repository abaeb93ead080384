"""The data-parallel Anakin loop (rtrl_rl/system/anakin.py, module doc "Data parallelism") on 4 forced
CPU devices: one PPO / IMPALA iteration equals its single-device reference on the same envs with the
same per-device keys (tests/_anakin_parallel_worker.py), runs are deterministic, and the trainer's
anakin backend uses all 4 devices, checkpoints and resumes. The multi-device runs are subprocesses
(XLA_FLAGS must be set before JAX starts), started together by one fixture so that their
compilations overlap."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rtrl_rl.agents.ppo import acting
from rtrl_rl.io import read_metrics
from rtrl_rl.io.checkpoint import Checkpointer
from tests._anakin_parallel_worker import B, T
from tests._multiprocess import ROOT, device_env, free_port, load_prefixed

WORKER = os.path.join(ROOT, "tests", "_anakin_parallel_worker.py")
FAST_COMPILE = "--xla_backend_optimization_level=0"
TRAIN = [  # PPO with an RTRL RTU on cue memory: 8 envs x 8 steps per iteration
  sys.executable,
  "-m",
  "rtrl_rl.train",
  "--config=configs/rtu_popgym.py",
  "--config.env.id=jax/cue-memory",
  "--config.system.backend=anakin",
  "--config.system.plot=False",
  "--config.agent.num_envs=8",
  "--config.agent.rollout_length=8",
  "--config.agent.num_epochs=1",
  "--config.agent.num_minibatches=2",
  "--config.agent.minibatch_size=32",
  "--config.agent.network.hidden_size=8",
  "--config.agent.network.mlp_hidden_sizes=(8,)",
  "--config.agent.network.head_hidden_sizes=(8,)",
]
STEPS_PER_ITERATION = 64


def _start(args, devices=4):
  return subprocess.Popen(
    args, cwd=ROOT, env=device_env(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )


def _train(run_dir, iterations, devices=4, *flags):
  return _start(
    [
      *TRAIN,
      f"--run_dir={run_dir}",
      f"--config.agent.total_env_steps={iterations * STEPS_PER_ITERATION}",
      *flags,
    ],
    devices,
  )


def _train_two_hosts(run_dir, iterations, train=TRAIN, steps_per_iteration=STEPS_PER_ITERATION, *flags):
  """The same run as two processes x 2 devices (jax.distributed, gloo on 127.0.0.1)."""
  address = f"127.0.0.1:{free_port()}"
  return [
    _start(
      [
        *train,
        f"--run_dir={run_dir}",
        f"--config.agent.total_env_steps={iterations * steps_per_iteration}",
        "--config.system.num_processes=2",
        f"--config.system.process_id={i}",
        f"--config.system.coordinator_address={address}",
        *flags,
      ],
      devices=2,
    )
    for i in range(2)
  ]


TRAIN_IMPALA = [  # feed-forward IMPALA on gymnax CartPole (describing it starts JAX's backend)
  sys.executable,
  "-m",
  "rtrl_rl.train",
  "--config=configs/default.py:ff",
  "--config.env.id=gymnax/CartPole-v1",
  "--config.system.backend=anakin",
  "--config.system.plot=False",
]


def _output(proc) -> str:
  try:
    out, _ = proc.communicate(timeout=300)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, _ = proc.communicate()
  assert proc.returncode == 0, out[-4000:]
  return out


def _checkpoint_leaves(run_dir, step) -> dict:
  state, _ = Checkpointer(os.path.join(run_dir, "checkpoints")).restore(step)
  raw = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
  return {jax.tree_util.keystr(k): np.asarray(raw(v)) for k, v in jax.tree_util.tree_leaves_with_path(state)}


def _summary(output: str) -> dict:
  line = [ln for ln in output.splitlines() if ln.startswith("run finished in ")][-1]
  return json.loads(line.split(": ", 1)[1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The worker and a 2-iteration trainer run (resumed by the test)."""
  tmp = tmp_path_factory.mktemp("anakin_par")
  out = str(tmp / "worker.npz")
  procs = {
    "worker": subprocess.Popen(
      [sys.executable, WORKER, out],
      env=device_env(4, FAST_COMPILE),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    ),
    "train": _train(tmp / "run", 2),
  }
  procs.update({f"host{i}": p for i, p in enumerate(_train_two_hosts(tmp / "hosts", 2))})
  procs.update(
    {
      f"impala_host{i}": p
      for i, p in enumerate(_train_two_hosts(tmp / "impala_hosts", 2, TRAIN_IMPALA, 20 * 32))
    }
  )
  yield dict(worker=out, dir=tmp, procs=procs)
  for p in procs.values():
    if p.poll() is None:
      p.kill()
      p.communicate()


@pytest.fixture(scope="module")
def worker(runs):
  _output(runs["procs"]["worker"])
  with np.load(runs["worker"]) as f:
    assert int(f["num_devices"]) == 4
  return runs["worker"]


def _assert_close(got, want, rtol=1e-5, atol=1e-7):
  assert got.keys() == want.keys() and got
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol, err_msg=k)


def _compare(path, algo, names):
  for name in names:
    # Parameters: Adam's normalised step amplifies the float summation-order differences of
    # near-zero gradients, hence an absolute tolerance well below the step size (1e-2).
    _assert_close(
      load_prefixed(path, f"{algo}/mesh/{name}/"),
      load_prefixed(path, f"{algo}/ref/{name}/"),
      atol=1e-6 if name == "params" else 1e-7,
    )


def test_ppo_iteration_on_4_devices_equals_the_single_device_reference(worker):
  """Device d acts on envs [2d, 2d + 2) from `fold_in(k, d)`; merged normalisation statistics; the
  update equals `make_update(num_shards=4)` on the concatenated buffer; global episode metrics."""
  _assert_close(load_prefixed(worker, "ppo/mesh_init/"), load_prefixed(worker, "ppo/ref_init/"), atol=0)
  _compare(worker, "ppo", ("params", "metrics", "norm", "ret"))
  with np.load(worker) as f:
    assert f["ppo/norm_copies_equal"]
    np.testing.assert_allclose(f["ppo/mesh_obs"], f["ppo/ref_obs"], rtol=1e-6)
    metrics = load_prefixed(worker, "ppo/mesh/metrics/")
    assert metrics["['episodes']"] == f["ppo/ended"] > 0  # every device's episodes
    # Every device's steps were folded into the statistics (they start at count 1e-4).
    np.testing.assert_allclose(load_prefixed(worker, "ppo/mesh/norm/")[".count"] - 1e-4, B * T, rtol=1e-6)
    np.testing.assert_allclose(
      load_prefixed(worker, "ppo/mesh/ret/")[".count"] - 1e-4, f["ppo/valid_steps"], rtol=1e-6
    )
    # The statistics moved from their initial values, and the update moved the parameters.
    assert not np.allclose(load_prefixed(worker, "ppo/mesh/norm/")[".mean"], 0)
    params = np.concatenate([v.ravel() for v in load_prefixed(worker, "ppo/mesh/params/").values()])
    assert params.shape == f["ppo/initial_params"].shape
    assert not np.allclose(params, f["ppo/initial_params"])


def test_impala_iteration_on_4_devices_equals_the_single_device_reference(worker):
  _compare(worker, "impala", ("params", "metrics"))
  assert load_prefixed(worker, "impala/mesh/metrics/")["['episodes']"] > 0


def _assert_equal(got, want):
  assert got.keys() == want.keys() and got
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_mesh_runs_are_deterministic_and_continue_bitwise_from_a_host_copy(worker):
  """Same seed: bitwise identical parameters after 2 iterations (another seed: different ones). A
  fetched state put back by `place` (a checkpoint's round trip) keeps its placement and its next
  iteration is bitwise that of the original."""
  again = load_prefixed(worker, "ppo/again0/")
  _assert_equal(load_prefixed(worker, "ppo/again1/"), again)
  other = load_prefixed(worker, "ppo/other_seed/")
  assert any(not np.array_equal(other[k], again[k]) for k in again)
  _assert_equal(load_prefixed(worker, "ppo/step2_restored/"), load_prefixed(worker, "ppo/step2/"))
  with np.load(worker) as f:
    assert f["ppo/restored_placement_equal"]


def test_merged_running_stats_equal_those_of_the_whole_batch():
  """`stats_update(..., axis_name)` in each of 4 groups (vmap) == one update on all their rows."""
  rng = np.random.default_rng(0)
  stats = acting.RunningStats(
    jnp.asarray(rng.normal(size=3), jnp.float32), jnp.asarray([1.0, 2.0, 0.5]), jnp.asarray(7.0)
  )
  x = jnp.asarray(rng.normal(size=(4, 5, 3)) * 3 + 1, jnp.float32)
  w = jnp.asarray(rng.random((4, 5)) < 0.6)
  for weight in (None, w):
    merged = jax.vmap(lambda xs, ws: acting.stats_update(stats, xs, ws, axis_name="g"), axis_name="g")(
      x, weight
    )
    whole = acting.stats_update(stats, x.reshape(20, 3), None if weight is None else weight.reshape(20))
    for m, s in zip(merged, whole):
      np.testing.assert_allclose(m, np.broadcast_to(s, m.shape), rtol=1e-5)


def test_trainer_anakin_on_4_devices_runs_and_resumes(runs):
  """The trainer splits the envs over the 4 devices and says so; restarted on its directory, the run
  restores the sharded state from its checkpoint and continues with its counters. A copy of the
  directory resumes on 1 device (new actor keys, `anakin.relayout`)."""
  out = _output(runs["procs"]["train"])
  assert "Anakin PPO data-parallel over 4 local devices" in out
  first = _summary(out)
  assert first["updates"] == 2 and first["frames"] == 2 * STEPS_PER_ITERATION
  shutil.copytree(runs["dir"] / "run", runs["dir"] / "run_on_1")
  moved = _output(_train(runs["dir"] / "run_on_1", 3, 1, "--accept_config_changes"))
  assert "written on another number of devices" in moved and "data-parallel" not in moved
  assert _summary(moved)["updates"] == 3 and _summary(moved)["frames"] == 3 * STEPS_PER_ITERATION
  resumed = _summary(_output(_train(runs["dir"] / "run", 3, 4, "--accept_config_changes")))
  assert resumed["updates"] == 3 and resumed["frames"] == 3 * STEPS_PER_ITERATION
  assert resumed["params_crc32"] != first["params_crc32"]


def test_trainer_anakin_on_two_processes_equals_one_process_and_resumes(runs):
  """Two processes x 2 devices (jax.distributed, gloo): each process's devices act on their share of
  the envs and the update is data-parallel over all 4. Both processes end with the same parameters,
  the checkpointed global state (env states, carries, keys, learner) equals that of one process
  with 4 devices (floats up to summation order). Restarted, both resume it; SIGTERM to one of them
  stops both at the same update, with a final checkpoint."""
  outs = [_output(runs["procs"][f"host{i}"]) for i in range(2)]
  assert "Anakin PPO data-parallel over 4 devices of 2 processes" in outs[0]
  first = [_summary(out) for out in outs]
  same = lambda summary: {k: v for k, v in summary.items() if k != "elapsed_s"}  # each process's clock
  assert same(first[0]) == same(first[1]) and first[0]["updates"] == 2
  _output(runs["procs"]["train"])
  hosts, single = (_checkpoint_leaves(runs["dir"] / name, 2) for name in ("hosts", "run"))
  assert hosts.keys() == single.keys() and len(hosts) > 20
  for k, want in single.items():
    if want.dtype.kind == "f":
      np.testing.assert_allclose(hosts[k], want, rtol=1e-4, atol=1e-6, err_msg=k)
    else:
      np.testing.assert_array_equal(hosts[k], want, err_msg=k)
  run_dir = runs["dir"] / "hosts"
  procs = _train_two_hosts(
    run_dir, 10_000, TRAIN, STEPS_PER_ITERATION, "--config.system.log_every_s=0.1", "--accept_config_changes"
  )
  deadline = time.time() + 300
  while not any(row["updates"] >= 4 for row in read_metrics(run_dir)):  # resumed at 2, 2 more done
    assert time.time() < deadline and all(p.poll() is None for p in procs)
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)  # one process only
  resumed = [_summary(_output(p)) for p in procs]
  assert same(resumed[0]) == same(resumed[1]) and resumed[0]["stopped_early"]
  assert resumed[0]["updates"] >= 4 and resumed[0]["elapsed_s"] > first[0]["elapsed_s"]
  assert resumed[0]["params_crc32"] != first[0]["params_crc32"]
  final = Checkpointer(os.path.join(run_dir, "checkpoints")).latest_step()
  assert final == resumed[0]["updates"]


def test_trainer_anakin_impala_on_two_processes_on_a_gymnax_env(runs):
  """Joining jax.distributed comes before the env is described (a gymnax env starts JAX's backend)."""
  outs = [_output(runs["procs"][f"impala_host{i}"]) for i in range(2)]
  assert "Anakin IMPALA data-parallel over 4 devices of 2 processes" in outs[0]
  summaries = [_summary(out) for out in outs]
  assert summaries[0]["updates"] == 2 and summaries[0]["frames"] == 2 * 20 * 32
  assert summaries[0]["params_crc32"] == summaries[1]["params_crc32"]
