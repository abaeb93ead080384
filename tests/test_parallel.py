"""Data parallelism: 4 forced CPU devices == 1 device; 2 processes x 2 devices (gloo) stay bitwise
identical and equal the single-process 4-device run. Each run is a subprocess (XLA_FLAGS and
jax.distributed must be set before JAX starts)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests._multiprocess import ROOT, assert_close, device_env, free_port, load_prefixed

WORKER = os.path.join(ROOT, "tests", "_parallel_worker.py")


@pytest.fixture(scope="module")
def four_device_run(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("par") / "devices.npz")
  p = subprocess.run(
    [sys.executable, WORKER, "devices", out], env=device_env(4), capture_output=True, text=True, timeout=300
  )
  assert p.returncode == 0, p.stderr[-4000:]
  return out


def test_update_on_4_devices_equals_single_device(four_device_run):
  with np.load(four_device_run) as f:
    assert int(f["num_devices"]) == 4
    np.testing.assert_allclose(f["mesh1_loss"], f["single1_loss"], rtol=1e-5)
  assert_close(load_prefixed(four_device_run, "mesh1"), load_prefixed(four_device_run, "single1"), rtol=1e-5)
  # The update changed the parameters (the comparison is not vacuous).
  final = load_prefixed(four_device_run, "final")
  assert any(not np.allclose(final[k], load_prefixed(four_device_run, "single1")[k]) for k in final)


def test_two_processes_with_gloo_keep_identical_parameters(four_device_run, tmp_path):
  port = free_port()
  outs = [str(tmp_path / f"proc{i}.npz") for i in range(2)]
  procs = [
    subprocess.Popen(
      [sys.executable, WORKER, "multiprocess", outs[i], str(port), "2", str(i)],
      env=device_env(2),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  errs = []
  for p in procs:
    try:
      _, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      p.kill()
      _, err = p.communicate()
    errs.append((p.returncode, err[-4000:]))
  assert all(rc == 0 for rc, _ in errs), errs
  with np.load(outs[0]) as f:
    assert int(f["num_devices"]) == 4  # 2 processes x 2 devices, one global mesh
  p0, p1 = load_prefixed(outs[0], "final"), load_prefixed(outs[1], "final")
  assert p0.keys() == p1.keys()
  for k in p0:
    np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)  # bitwise identical replicas
  assert_close(p0, load_prefixed(four_device_run, "final"), rtol=1e-5)  # == 1 process x 4 devices
