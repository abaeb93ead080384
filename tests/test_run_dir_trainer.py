"""A run directory never loses or mixes work (issue 15), end to end: `python -m rtrl_rl.train` in a
subprocess, as a user (or a scheduler) would run it, on a small deterministic anakin job.

Each test is a sequence of trainer starts (each on one core, bound by its start-up), independent of
the others' timing: a module fixture runs the selected tests' scenarios two at a time, after the
uninterrupted reference run that most of them compare with, and each test reports its own."""

import concurrent.futures
import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from rtrl_rl.io.checkpoint import Checkpointer
from tests._multiprocess import ROOT

ITERATION = 256  # agent steps per iteration (one update)
TINY = [  # PPO with an RTRL linear RTU on our JAX POPGym RepeatPrevious, one env
  "--config=configs/rtu_popgym.py:task=RepeatPrevious,core=rtu_linear",
  f"--config.agent.rollout_length={ITERATION}",
  "--config.agent.num_minibatches=4",
  "--config.agent.network.hidden_size=16",
  "--config.system.plot=False",
  "--config.system.log_every_s=0.1",
  "--config.system.checkpoint_every_s=0.05",  # a checkpoint about every iteration
]


def _cmd(run_dir, iterations, *flags):
  return [
    sys.executable,
    "-m",
    "rtrl_rl.train",
    f"--run_dir={run_dir}",
    *TINY,
    f"--config.agent.total_env_steps={iterations * ITERATION}",
    *flags,
  ]


def _train(run_dir, iterations, *flags, timeout=300):
  out = subprocess.run(
    _cmd(run_dir, iterations, *flags), cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
  )
  return out.returncode, out.stdout + out.stderr


def _start(run_dir, iterations, *flags):
  return subprocess.Popen(
    _cmd(run_dir, iterations, *flags),
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    start_new_session=True,
    env={**os.environ, "PYTHONUNBUFFERED": "1"},
  )


def _summary(output: str) -> dict:
  line = [ln for ln in output.splitlines() if ln.startswith("run finished in ")][-1]
  return json.loads(line.split(": ", 1)[1])


def _steps(run_dir):
  d = os.path.join(run_dir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _wait_for_checkpoint(run_dir, proc, newer_than=-1, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    committed = [
      s
      for s in _steps(run_dir)
      if os.path.exists(os.path.join(run_dir, "checkpoints", str(s), "commit_success.txt"))
    ]
    if committed and committed[-1] > newer_than:
      return committed[-1]
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    time.sleep(0.05)
  raise AssertionError("no new checkpoint")


def _damage(run_dir, step):
  """Flips a byte in the middle of the step's largest array data file (its CRC-32 fails)."""
  path = max(glob.glob(f"{run_dir}/checkpoints/{step}/state/ocdbt.process_0/d/*"), key=os.path.getsize)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(data)


def _checkpoint_params_crc(run_dir, step):
  """params_crc32 (system/trainer.py) of the parameters in checkpoint `step`."""
  tree, _ = Checkpointer(os.path.join(run_dir, "checkpoints"), is_primary=False).restore(step)
  crc = 0
  for path, leaf in tree.items():  # in tree order
    if path.startswith(".learner.params"):
      crc = zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).tobytes(), crc)
  return crc


def _tree(run_dir):
  out = {}
  for root, dirs, files in os.walk(run_dir):
    for n in dirs + files:
      st = os.stat(os.path.join(root, n))
      out[os.path.relpath(os.path.join(root, n), run_dir)] = (st.st_size if n in files else 0, st.st_mtime_ns)
  return out


def _reference(tmp_path):
  """An uninterrupted run of 12 iterations: its summary and run dir."""
  rd = str(tmp_path / "run")
  code, out = _train(rd, 12)
  assert code == 0, out[-3000:]
  return _summary(out), rd


_SCENARIOS = {}


def _scenario(fn):
  """The body of the test `test<fn.__name__>`: `fn(tmp_path, reference)`, where `reference()` waits
  for the reference run and returns it (`_reference`)."""
  _SCENARIOS["test" + fn.__name__] = fn
  return fn


@pytest.fixture(scope="module")
def scenarios(request, tmp_path_factory):
  """The futures of the selected tests' scenarios, two at a time, the reference run first."""
  selected = [item.name for item in request.session.items if item.module is request.module]
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    ref = pool.submit(_reference, tmp_path_factory.mktemp("reference"))
    yield {
      name: pool.submit(_SCENARIOS[name], tmp_path_factory.mktemp(name[:30]), ref.result)
      for name in selected
      if name in _SCENARIOS
    }


@pytest.fixture
def scenario(scenarios, request):
  return scenarios[request.node.name]


@_scenario
def _no_work_lost_across_sigint_sigterm_sigkill_and_a_damaged_checkpoint(tmp_path, reference):
  """Interrupted by SIGINT, SIGTERM and SIGKILL of the whole process group at varied moments, its
  newest checkpoint damaged once, resumed each time: the same parameters as the uninterrupted run."""
  rd = str(tmp_path / "run")
  newest = -1
  for sig, wait_for in ((signal.SIGINT, 1), (signal.SIGTERM, 2), (signal.SIGKILL, 1), (signal.SIGKILL, 2)):
    proc = _start(rd, 12)
    for _ in range(wait_for):
      newest = _wait_for_checkpoint(rd, proc, newest)
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    if sig != signal.SIGKILL:
      assert proc.returncode == 0 and _summary(out)["stopped_early"], out[-3000:]
    newest = max(_steps(rd))
    if sig == signal.SIGKILL and wait_for == 1:
      _damage(rd, newest)
  code, out = _train(rd, 12)
  assert code == 0, out[-3000:]
  summary = _summary(out)
  assert summary["updates"] == 12 and not summary["stopped_early"]
  assert summary["params_crc32"] == reference()[0]["params_crc32"]
  assert os.listdir(os.path.join(rd, "set_aside"))  # the damaged step, kept
  on_disk = json.load(open(os.path.join(rd, "summary.json")))
  assert on_disk["updates"] == max(_steps(rd)) == 12  # summary.json describes the
  assert on_disk["params_crc32"] == _checkpoint_params_crc(rd, 12)  # newest checkpoint


@_scenario
def _a_damaged_or_uncommitted_newest_checkpoint_never_blocks_the_final_save(tmp_path, reference):
  ref, ref_dir = reference()
  rd = str(tmp_path / "run")
  subprocess.run(["cp", "-r", ref_dir, rd], check=True)
  final = max(_steps(rd))
  _damage(rd, final)  # was: resumed from the previous one, then skipped the final save
  code, out = _train(rd, 12)
  assert code == 0, out[-3000:]
  assert "moved aside" in out and _summary(out)["params_crc32"] == ref["params_crc32"]
  assert json.load(open(os.path.join(rd, "summary.json")))["params_crc32"] == _checkpoint_params_crc(
    rd, final
  )
  os.remove(os.path.join(rd, "checkpoints", str(final), "commit_success.txt"))  # was: StepAlreadyExists
  code, out = _train(rd, 12)
  assert code == 0, out[-3000:]
  assert _summary(out)["params_crc32"] == ref["params_crc32"] and max(_steps(rd)) == final
  assert len([n for n in os.listdir(os.path.join(rd, "set_aside")) if n[0].isdigit()]) == 2


@_scenario
def _unreadable_checkpoints_are_refused_until_start_over(tmp_path, reference):
  _, ref_dir = reference()
  rd = str(tmp_path / "run")
  subprocess.run(["cp", "-r", ref_dir, rd], check=True)
  for m in glob.glob(f"{rd}/checkpoints/*/manifest/*"):
    open(m, "w").write("{")  # was: three warnings, a restart from 0, retention deleted them all
  before = _tree(rd)
  code, out = _train(rd, 12)
  assert code == 2 and "none can be restored" in out and "--start_over" in out, out[-3000:]
  assert "Traceback" not in out and _tree(rd) == before
  code, out = _train(rd, 2, "--start_over")
  assert code == 0, out[-3000:]
  assert _summary(out)["updates"] == 2 and _steps(rd)[-1] == 2
  assert len([n for n in os.listdir(os.path.join(rd, "set_aside")) if n[0].isdigit()]) == 3


@_scenario
def _config_changes_are_refused_or_recorded_and_a_finished_run_is_left_alone(tmp_path, reference):
  ref, ref_dir = reference()
  rd = str(tmp_path / "run")
  subprocess.run(["cp", "-r", ref_dir, rd], check=True)
  before = _tree(rd)
  code, out = _train(rd, 12)  # was: actors started, summary rewritten with NaN
  assert code == 0 and "nothing to do" in out and _tree(rd) == before, out[-3000:]
  code, out = _train(rd, 12, "--config.agent.learning_rate=0.01")  # same shapes: was silent
  assert code == 2 and "agent.learning_rate" in out and "--accept_config_changes" in out, out[-3000:]
  assert "Traceback" not in out and _tree(rd) == before  # config.json untouched
  code, out = _train(rd, 14, "--accept_config_changes")
  assert code == 0 and _summary(out)["updates"] == 14, out[-3000:]
  (change,) = [json.loads(ln) for ln in open(os.path.join(rd, "config_changes.jsonl"))]
  assert change["at_update"] == 12 and change["changes"]["agent.total_env_steps"] == {
    "old": 12 * ITERATION,
    "new": 14 * ITERATION,
  }
  assert json.load(open(os.path.join(rd, "config.json")))["agent"]["total_env_steps"] == 14 * ITERATION
  assert ref["updates"] == 12


@_scenario
def _a_second_trainer_on_a_run_dir_in_use_exits_2_naming_the_holder(tmp_path, reference):  # pylint: disable=unused-argument
  rd = str(tmp_path / "run")
  first = _start(rd, 10_000)
  try:
    _wait_for_checkpoint(rd, first)
    code, out = _train(rd, 10_000)
    assert code == 2 and f"pid {first.pid} on host" in out and "Traceback" not in out, out[-3000:]
  finally:
    os.killpg(first.pid, signal.SIGINT)
    out, _ = first.communicate(timeout=120)
  assert first.returncode == 0, out[-3000:]
  summary = json.load(open(os.path.join(rd, "summary.json")))
  assert summary["params_crc32"] == _checkpoint_params_crc(rd, max(_steps(rd)))


@contextlib.contextmanager
def _small_disk(tmp_path):
  """A 4 MiB tmpfs (root mounts it; the test machines run as root)."""
  mnt = tmp_path / "disk"
  mnt.mkdir()
  subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
  try:
    yield str(mnt)
  finally:
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@_scenario
def _a_full_disk_is_one_paragraph_the_last_checkpoint_intact_and_the_run_resumes(tmp_path, reference):
  with _small_disk(tmp_path) as small_disk:
    _full_disk(small_disk, reference)


def _full_disk(small_disk, reference):
  rd = os.path.join(small_disk, "run")
  proc = _start(rd, 12)
  newest = _wait_for_checkpoint(rd, proc)
  filler = os.path.join(small_disk, "filler")
  fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill the disk while the run trains
  try:
    while os.write(fd, b"\0" * 65536):
      pass
  except OSError:
    pass
  finally:
    os.close(fd)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 1, out[-3000:]  # was: ~570 lines of traceback
  assert "Traceback" not in out and "the disk is full" in out and "free of" in out, out[-3000:]
  assert "rerun the same command" in out
  error = [ln for ln in out.splitlines() if ln.startswith("error:")]
  assert len(error) == 1 and "intact" in error[0]
  assert max(_steps(rd)) >= newest
  os.remove(filler)
  code, out = _train(rd, 12)
  assert code == 0, out[-3000:]
  assert _summary(out)["params_crc32"] == reference()[0]["params_crc32"]


def test_no_work_lost_across_sigint_sigterm_sigkill_and_a_damaged_checkpoint(scenario):
  scenario.result()


def test_a_damaged_or_uncommitted_newest_checkpoint_never_blocks_the_final_save(scenario):
  scenario.result()


def test_unreadable_checkpoints_are_refused_until_start_over(scenario):
  scenario.result()


def test_config_changes_are_refused_or_recorded_and_a_finished_run_is_left_alone(scenario):
  scenario.result()


def test_a_second_trainer_on_a_run_dir_in_use_exits_2_naming_the_holder(scenario):
  scenario.result()


def test_a_full_disk_is_one_paragraph_the_last_checkpoint_intact_and_the_run_resumes(scenario):
  scenario.result()
