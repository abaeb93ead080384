"""The GPU kit's plumbing that can be checked without a GPU (bench/gpu; BUILD_NOTES "GPU kit").

The kit's full smoke run (`make bench-gpu-smoke`, a few minutes) is not part of the suite; these
checks are: the wheel slimmer keeps what it is told to, writes a RECORD that matches the files, and
makes a module's imports tolerant; run.sh parses and rejects unknown steps.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench", "gpu"))

import slim_wheel  # noqa: E402 - after bench/gpu is put on sys.path (above)


def _make_wheel(path: str) -> None:
  members = {
    "pkg/__init__.py": b"import pkg.entry\n",
    "pkg/entry.py": b"import pkg.a.registration  # noqa: F401\nimport pkg.b.registration\nX = 1\n",
    "pkg/a/__init__.py": b"from . import engine\n",
    "pkg/a/engine.py": b"OK = True\n",
    "pkg/a/registration.py": b"",
    "pkg/a/big.so": b"\0" * 1000,
    "pkg/b/__init__.py": b"from .engine import missing\n",
    "pkg/b/big.so": b"\1" * 1000,
    "pkg/b/registration.py": b"",
    "pkg-1.0.dist-info/METADATA": b"Name: pkg\nVersion: 1.0\n",
    "pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\n",
  }
  with zipfile.ZipFile(path, "w") as z:
    for name, data in members.items():
      z.writestr(name, data)
    z.writestr("pkg-1.0.dist-info/RECORD", "stale\n")


def test_slim_wheel_keeps_drops_rewrites_and_records(tmp_path):
  src = tmp_path / "in" / "pkg-1.0-py3-none-any.whl"
  src.parent.mkdir()
  _make_wheel(str(src))
  out = slim_wheel.slim(
    str(src),
    str(tmp_path / "out"),
    drop=["pkg/*/*.so", "pkg/b/*"],
    keep=["pkg/a/*", "pkg/b/__init__.py", "pkg/b/registration.py"],
    tolerant=["pkg/entry.py"],
  )
  with zipfile.ZipFile(out) as z:
    names = set(z.namelist())
    assert "pkg/a/big.so" in names and "pkg/b/big.so" not in names
    assert {"pkg/b/__init__.py", "pkg/b/registration.py", "pkg/a/engine.py"} <= names
    record = z.read("pkg-1.0.dist-info/RECORD").decode().splitlines()
    rows = {line.split(",")[0]: line.split(",")[1:] for line in record}
    assert set(rows) == names  # every member listed, the RECORD itself too
    for name in names - {"pkg-1.0.dist-info/RECORD"}:
      data = z.read(name)
      digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
      assert rows[name] == [f"sha256={digest}", str(len(data))], name
    z.extractall(tmp_path / "site")
  # The package imports although pkg.b's engine is gone: entry.py skips it.
  probe = (
    "import pkg, pkg.entry, sys; print(pkg.entry.X, 'pkg.a.registration' in sys.modules, "
    "'pkg.b.registration' in sys.modules)"
  )
  res = subprocess.run(
    [sys.executable, "-c", probe], cwd=tmp_path / "site", capture_output=True, text=True, check=True
  )
  assert res.stdout.split() == ["1", "True", "False"]


def test_run_sh_parses_and_rejects_unknown_steps():
  script = os.path.join(REPO, "bench", "gpu", "run.sh")
  subprocess.run(["bash", "-n", script], check=True)
  res = subprocess.run(["bash", script, "--smoke", "nonsense"], capture_output=True, text=True)
  assert res.returncode == 2 and "usage" in res.stderr
