"""Helpers for tests that run JAX in subprocesses (forced CPU devices, gloo multi-process runs)."""

import os
import socket

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def device_env(devices: int, xla_flags: str = "") -> dict:
  """The environment of a subprocess that sees `devices` forced CPU devices and imports the repo."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {xla_flags}".strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def load_prefixed(path, prefix: str) -> dict:
  """The arrays of an .npz file whose names start with `prefix`, keyed by the rest of the name."""
  with np.load(path) as f:
    return {k[len(prefix) :]: f[k] for k in f.files if k.startswith(prefix)}


def assert_close(got: dict, want: dict, rtol: float) -> None:
  assert got.keys() == want.keys() and got
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=1e-7, err_msg=k)
