"""The run directory's owner and resume decision (rtrl_rl/io/run_dir.py) on synthetic checkpoints:
the lock, damaged and uncommitted steps moved aside, refusals that change nothing, config changes,
finished runs, write failures. tests/test_run_dir_trainer.py runs the trainer against the same cases."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rtrl_rl import experiment
from rtrl_rl.io import run_dir
from rtrl_rl.io.checkpoint import Checkpointer

CONFIG = {
  "seed": 0,
  "agent": {"learning_rate": 1e-3, "network": {"hidden_size": 16}},
  "system": {"process_id": 0, "coordinator_address": "", "keep_checkpoints": 3},
}


def _ckpt(rd):
  return Checkpointer(
    os.path.join(rd, "checkpoints"),
    max_to_keep=None,
    async_save=False,
    set_aside_directory=os.path.join(rd, run_dir.SET_ASIDE_DIR),
  )


def _run_with_steps(tmp_path, steps, config=CONFIG, finished_at=None):
  rd = str(tmp_path / "run")
  ckpt = _ckpt(rd)
  for s in steps:
    ckpt.save(
      s,
      {"w": np.random.default_rng(s).standard_normal(4096).astype(np.float32)},
      {"updates": s, "config": config, "finished": s == finished_at},
      wait=True,
    )
  with open(os.path.join(rd, run_dir.CONFIG_FILE), "w") as f:
    json.dump(config, f)
  return rd, ckpt


def _damage_data(rd, step):
  """Flips one byte of the step's largest data file (its CRC-32 no longer matches)."""
  files = glob.glob(f"{rd}/checkpoints/{step}/state/ocdbt.process_0/d/*")  # the arrays' data files
  path = max(files, key=os.path.getsize)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(data)


def _tree(rd):
  """Every path under rd with its size and mtime (to show that nothing changed)."""
  out = {}
  for root, dirs, files in os.walk(rd):
    for n in dirs + files:
      p = os.path.join(root, n)
      st = os.stat(p)
      out[os.path.relpath(p, rd)] = (st.st_size if n in files else 0, st.st_mtime_ns)
  return out


def test_a_damaged_and_an_uncommitted_newest_step_are_moved_aside_not_deleted(tmp_path):
  rd, ckpt = _run_with_steps(tmp_path, [1, 2, 3, 4])
  _damage_data(rd, 4)
  os.remove(os.path.join(rd, "checkpoints", "3", "commit_success.txt"))
  before = _tree(rd)
  plan = run_dir.plan_run(rd, CONFIG, ckpt)
  assert plan.step == 2 and not plan.finished and not plan.changes
  assert [s for s, _ in plan.damaged] == [4, 3] and _tree(rd) == before  # deciding changes nothing
  run_dir.apply_plan(rd, CONFIG, ckpt, plan)
  assert ckpt.step_dirs() == [1, 2]
  aside = os.listdir(os.path.join(rd, run_dir.SET_ASIDE_DIR))
  assert sorted(n.split(".")[0] for n in aside if n != "reasons.txt") == ["3", "4"]
  reasons = open(os.path.join(rd, run_dir.SET_ASIDE_DIR, "reasons.txt")).read()
  assert "step 4" in reasons and "CRC-32" in reasons and "step 3" in reasons and "commit_success" in reasons
  # the run's next saves reuse the numbers 3 and 4 and retention counts intact steps only
  ckpt2 = Checkpointer(os.path.join(rd, "checkpoints"), max_to_keep=2, async_save=False)
  for s in (3, 4):
    assert ckpt2.save(s, {"w": np.zeros(4, np.float32)}, {"updates": s}, wait=True)
  assert ckpt2.all_steps() == [3, 4]


def test_checkpoints_that_are_all_damaged_are_refused_and_nothing_changes(tmp_path):
  rd, ckpt = _run_with_steps(tmp_path, [1, 2])
  for m in glob.glob(f"{rd}/checkpoints/*/manifest/*"):
    open(m, "w").write("{not json")
  before = _tree(rd)
  with pytest.raises(
    run_dir.RunDirError,
    match=r"2 checkpoint\(s\) and none can be restored.*step 2.*"
    r"step 1.*--start_over",
  ):
    run_dir.plan_run(rd, CONFIG, ckpt)
  assert _tree(rd) == before
  # --start_over moves them aside, with the old run's files
  open(os.path.join(rd, "metrics.jsonl"), "w").write('{"step": 1}\n')
  plan = run_dir.plan_run(rd, dict(CONFIG, seed=3), ckpt, start_over=True)
  run_dir.apply_plan(rd, dict(CONFIG, seed=3), ckpt, plan)
  assert (
    plan.step is None and ckpt.step_dirs() == [] and not os.path.exists(os.path.join(rd, "metrics.jsonl"))
  )
  aside = os.path.join(rd, run_dir.SET_ASIDE_DIR)
  (files,) = [n for n in os.listdir(aside) if n.startswith("run_files.")]
  assert sorted(os.listdir(os.path.join(aside, files))) == ["config.json", "metrics.jsonl"]
  assert len([n for n in os.listdir(aside) if n[0].isdigit()]) == 2
  assert json.load(open(os.path.join(rd, run_dir.CONFIG_FILE)))["seed"] == 3


def test_a_checkpoint_saved_before_a_rename_is_compared_under_the_new_names(tmp_path):
  """A run written before issue 17 saved IMPALA's value cost as agent.baseline_cost. Compared as
  it was, the field sits on one side only and resuming would silently change 0.25 to 0.5; with
  the trainer's `upgrade` it is agent.value_cost, and the change is refused like any other."""
  old = json.loads(json.dumps(CONFIG))
  old["agent"]["baseline_cost"] = 0.25
  rd, ckpt = _run_with_steps(tmp_path, [1], config=old)
  new = json.loads(json.dumps(CONFIG))
  new["agent"]["value_cost"] = 0.5
  assert run_dir.plan_run(rd, new, ckpt).changes == {}  # the hole: no common field
  with pytest.raises(run_dir.RunDirError, match=r"agent.value_cost: 0.25 -> 0.5"):
    run_dir.plan_run(rd, new, ckpt, upgrade=experiment.upgrade_saved_config)
  new["agent"]["value_cost"] = 0.25
  plan = run_dir.plan_run(rd, new, ckpt, upgrade=experiment.upgrade_saved_config)
  assert plan.step == 1 and plan.changes == {}


def test_a_changed_config_is_refused_listing_the_fields_unless_accepted_then_recorded(tmp_path):
  rd, ckpt = _run_with_steps(tmp_path, [1, 2])
  new = json.loads(json.dumps(CONFIG))
  new["agent"]["learning_rate"] = 3e-4  # the same shapes: resuming would "work" silently
  new["seed"] = 1
  before = _tree(rd)
  with pytest.raises(run_dir.RunDirError) as e:
    run_dir.plan_run(rd, new, ckpt)
  assert "2 field(s) differ: agent.learning_rate: 0.001 -> 0.0003; seed: 0 -> 1" in str(e.value)
  assert "--accept_config_changes" in str(e.value) and _tree(rd) == before  # config.json untouched
  plan = run_dir.plan_run(rd, new, ckpt, accept_config_changes=True)
  assert plan.step == 2 and set(plan.changes) == {"agent.learning_rate", "seed"}
  assert _tree(rd) == before
  run_dir.apply_plan(rd, new, ckpt, plan)
  (line,) = open(os.path.join(rd, run_dir.CHANGES_FILE)).read().splitlines()
  rec = json.loads(line)
  assert rec["at_update"] == 2 and rec["changes"]["seed"] == {"old": 0, "new": 1}
  assert json.load(open(os.path.join(rd, run_dir.CONFIG_FILE))) == new


def test_where_the_processes_run_and_fields_of_newer_versions_may_change_on_resume():
  moved = json.loads(json.dumps(CONFIG))
  moved["system"]["coordinator_address"] = "node7:1234"
  moved["system"]["process_id"] = 1
  assert run_dir.config_changes(CONFIG, moved) == {}
  moved["system"]["keep_checkpoints"] = 5
  assert run_dir.config_changes(CONFIG, moved) == {"system.keep_checkpoints": (3, 5)}
  moved["system"]["stall_timeout_s"] = 60.0  # a field this version added: not a change
  assert run_dir.config_changes(CONFIG, moved) == {"system.keep_checkpoints": (3, 5)}


def test_a_finished_run_is_left_untouched(tmp_path):
  rd, ckpt = _run_with_steps(tmp_path, [1, 2], finished_at=2)
  before = _tree(rd)
  plan = run_dir.plan_run(rd, CONFIG, ckpt)
  assert plan.finished and plan.step == 2 and _tree(rd) == before
  longer = json.loads(json.dumps(CONFIG))
  longer["agent"]["network"]["hidden_size"] = 32
  assert not run_dir.plan_run(rd, longer, ckpt, accept_config_changes=True).finished


_HOLD = textwrap.dedent("""
    import sys, time
    from rtrl_rl.io import run_dir
    lock = run_dir.RunLock(sys.argv[1])
    lock.name_holder()
    print("locked", flush=True)
    time.sleep(600)
""")


def test_one_owner_per_run_dir_and_a_killed_owner_never_blocks_the_next(tmp_path):
  rd = str(tmp_path / "run")
  holder = subprocess.Popen(
    [sys.executable, "-c", _HOLD, rd],
    stdout=subprocess.PIPE,
    text=True,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(run_dir.RunDirBusy, match=rf"pid {holder.pid} on host .*another --run_dir"):
      run_dir.RunLock(rd)
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  lock = run_dir.RunLock(rd)  # the kernel released the dead holder's lock
  lock.release()


def test_a_run_dir_that_is_a_file_is_refused(tmp_path):
  f = tmp_path / "file"
  f.write_text("x")
  for path in (f, f / "sub"):
    with pytest.raises(run_dir.RunDirError, match="is a file"):
      run_dir.RunLock(str(path))


def test_a_full_disk_is_one_paragraph_with_what_where_free_space_and_how_to_resume(tmp_path):
  err = OSError(28, "No space left on device", str(tmp_path))
  wrapped = ValueError("orbax failed")
  wrapped.__cause__ = err
  assert run_dir.disk_error(wrapped) is err and run_dir.disk_error(ValueError("x")) is None
  tensorstore = ValueError("RESOURCE_EXHAUSTED: Failed to write 184 bytes [os_error_code='28'] [spec]")
  assert run_dir.disk_error(tensorstore).errno == 28
  text = run_dir.describe_write_failure(
    err, "the checkpoint of update 7", str(tmp_path), "The last good checkpoint (update 5) is intact"
  )
  assert "the checkpoint of update 7" in text and "the disk is full" in text and "free of" in text
  assert "update 5" in text and "rerun the same command" in text and "\n" not in text


def test_a_checkpoint_that_does_not_fit_the_free_space_is_not_started(tmp_path, monkeypatch):
  ckpt = Checkpointer(str(tmp_path / "c"), async_save=False)
  ckpt.save(1, {"w": np.zeros(1000, np.float32)}, wait=True)
  usage = shutil.disk_usage(str(tmp_path))
  monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1 << 19))
  with pytest.raises(OSError, match="needs about") as e:
    ckpt.save(2, {"w": np.zeros(1000, np.float32)}, wait=True)
  assert e.value.errno == 28 and ckpt.step_dirs() == [1]
  assert not [n for n in os.listdir(ckpt.directory) if "tmp" in n]
