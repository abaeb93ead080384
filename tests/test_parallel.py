"""Data parallelism: 4 forced CPU devices == 1 device; 2 processes x 2 devices (gloo) stay bitwise
identical and equal the single-process 4-device run. Each run is a subprocess (XLA_FLAGS and
jax.distributed must be set before JAX starts), all started at once by one fixture so that their
compilations overlap."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests._multiprocess import ROOT, assert_close, device_env, free_port, load_prefixed

WORKER = os.path.join(ROOT, "tests", "_parallel_worker.py")


def _wait(proc):
  try:
    _, err = proc.communicate(timeout=300)
  except subprocess.TimeoutExpired:
    proc.kill()
    _, err = proc.communicate()
  return proc.returncode, err[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The 4-device run and the two 2-device processes, started together (each compiles on one core):
  {"devices": (its output, its process), "multiprocess": [(output, process)] * 2}."""
  tmp = tmp_path_factory.mktemp("par")
  start = lambda args, devices: subprocess.Popen(
    [sys.executable, WORKER, *args],
    env=device_env(devices),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  port = free_port()
  out = str(tmp / "devices.npz")
  outs = [str(tmp / f"proc{i}.npz") for i in range(2)]
  procs = {
    "devices": (out, start(["devices", out], 4)),
    "multiprocess": [
      (outs[i], start(["multiprocess", outs[i], str(port), "2", str(i)], 2)) for i in range(2)
    ],
  }
  yield procs
  for _, p in [procs["devices"], *procs["multiprocess"]]:
    if p.poll() is None:
      p.kill()
      p.communicate()


@pytest.fixture(scope="module")
def four_device_run(runs):
  out, proc = runs["devices"]
  rc, err = _wait(proc)
  assert rc == 0, err
  return out


def test_update_on_4_devices_equals_single_device(four_device_run):
  with np.load(four_device_run) as f:
    assert int(f["num_devices"]) == 4
    np.testing.assert_allclose(f["mesh1_loss"], f["single1_loss"], rtol=1e-5)
  assert_close(load_prefixed(four_device_run, "mesh1"), load_prefixed(four_device_run, "single1"), rtol=1e-5)
  # The update changed the parameters (the comparison is not vacuous).
  final = load_prefixed(four_device_run, "final")
  assert any(not np.allclose(final[k], load_prefixed(four_device_run, "single1")[k]) for k in final)


def test_two_processes_with_gloo_keep_identical_parameters(runs, four_device_run):
  errs = [_wait(p) for _, p in runs["multiprocess"]]
  assert all(rc == 0 for rc, _ in errs), errs
  outs = [out for out, _ in runs["multiprocess"]]
  with np.load(outs[0]) as f:
    assert int(f["num_devices"]) == 4  # 2 processes x 2 devices, one global mesh
  p0, p1 = load_prefixed(outs[0], "final"), load_prefixed(outs[1], "final")
  assert p0.keys() == p1.keys()
  for k in p0:
    np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)  # bitwise identical replicas
  assert_close(p0, load_prefixed(four_device_run, "final"), rtol=1e-5)  # == 1 process x 4 devices
