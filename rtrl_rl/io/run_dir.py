"""One run directory, one owner, and the decision to resume it (before anything in it changes).

    lock = RunLock(run_dir)                    # exclusive for the whole run; RunDirBusy names the holder
    plan = plan_run(run_dir, config_dict, checkpointer, start_over=False, accept_config_changes=False)
    if plan.finished: ...                      # the run ended already: nothing to do, nothing touched
    state = restore(plan.step)                 # a checkpoint of another shape fails here: nothing changed
    apply_plan(run_dir, config_dict, checkpointer, plan)   # then the directory is prepared

The rules (each one a failure seen on a real run directory):
- One trainer per directory: an exclusive `flock` on `run.lock`, which the kernel releases when its
  holder dies (a SIGKILLed run never blocks its own resume). The file names the holder (host, pid).
- The config travels with the checkpoints (their metadata). A rerun whose config differs from the
  newest checkpoint's in any field (`PLACEMENT_FIELDS` aside) is refused, listing the fields, unless
  the changes are accepted; accepted changes are appended to `config_changes.jsonl` (old -> new, at
  which update). `config.json` is written only after these checks pass.
- Checkpoints never block progress: damaged or uncommitted steps newer than the newest intact one are
  moved aside into `set_aside/` (`Checkpointer.set_aside`, never deleted) before training continues.
  Checkpoints present but none intact: refused, naming what is damaged, unless the run starts over,
  which moves them all aside, and the old run's metrics, summary and config with them.
- A run whose newest checkpoint is its end (metadata `finished`) with the same config is left as is.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import fcntl
import json
import os
import re
import shutil
import socket
from typing import Any, Callable

CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
LOCK_FILE = "run.lock"
SET_ASIDE_DIR = "set_aside"  # damaged checkpoints and the files of a run started over, never deleted
# A run's own files besides its checkpoints (what --start_over moves aside with them).
RUN_FILES = (CONFIG_FILE, CHANGES_FILE, "metrics.jsonl", "tb", "summary.json", "learning_curve.png")
# Where the processes of a run are placed, chosen by the launcher on each start (a resumed SLURM job
# gets another head node), and where compiled programs are cached: not part of what the run
# computes, so they may differ on resume.
PLACEMENT_FIELDS = ("system.process_id", "system.coordinator_address", "system.compilation_cache")


class RunDirError(Exception):
  """A run directory that cannot be used as asked; the message says why and what to do (exit 2)."""


class RunDirBusy(RunDirError):
  """Another live trainer holds the run directory."""


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _usable_dir(run_dir: str) -> None:
  """Creates `run_dir`; RunDirError when it is a file or cannot be written."""
  try:
    os.makedirs(run_dir, exist_ok=True)
  except (FileExistsError, NotADirectoryError):
    raise RunDirError(
      f"--run_dir {run_dir} is a file (or lies under one), not a directory: pass a directory path"
    ) from None
  except OSError as e:
    raise RunDirError(
      f"cannot create the run directory {run_dir}: {e.strerror}; pass another --run_dir"
    ) from None
  if not os.access(run_dir, os.W_OK | os.X_OK):
    raise RunDirError(
      f"the run directory {run_dir} is not writable by this user: fix its permissions "
      "or pass another --run_dir"
    )


class RunLock:
  """An exclusive lock on `run_dir` held until `release()` or the end of the process."""

  def __init__(self, run_dir: str):
    _usable_dir(run_dir)
    self.path = os.path.join(run_dir, LOCK_FILE)
    try:
      self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise RunDirError(
        f"cannot open the lock file {self.path}: {e.strerror}; pass another --run_dir"
      ) from None
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(self._fd, 4096, 0).decode(errors="replace").strip()
      os.close(self._fd)
      try:
        who = json.loads(holder)
        desc = f"pid {who['pid']} on host {who['host']}, since {who['since']}"
      except (ValueError, KeyError, TypeError):
        desc = "a process that has not written its name yet"
      raise RunDirBusy(
        f"another trainer is using {run_dir} ({desc}). Two trainers on one run "
        "directory would mix their checkpoints and metrics: wait for it to end, stop "
        "it, or pass another --run_dir"
      ) from None

  def name_holder(self) -> None:
    """Writes this process's host and pid into the lock file (read by a trainer refused above)."""
    text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": _now()}).encode()
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, text + b"\n", 0)

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # releases the flock
      self._fd = None


def flat_config(config: dict, prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  out: dict[str, Any] = {}
  for k, v in config.items():
    if isinstance(v, dict) and v:
      out.update(flat_config(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
  """{field: (old, new)} of the fields (dotted) whose values differ, `PLACEMENT_FIELDS` aside. A
  field on one side only (a checkpoint written by a version without it) is not a change."""
  a, b = flat_config(old), flat_config(new)
  return {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if k not in PLACEMENT_FIELDS and a[k] != b[k]}


@dataclasses.dataclass(frozen=True)
class Plan:
  """How a run uses its directory (`plan_run`); `apply_plan` carries it out.

  step: the checkpoint to resume from (None: start at update 0).
  finished: the newest checkpoint ends this very run (same config): nothing to do.
  changes: the accepted config changes {field: (old, new)}.
  damaged: (step, reason) of the steps to move aside, newest first.
  start_over: move every step and the run's files aside.
  at_update: the resumed checkpoint's update counter (for the record of the changes).
  """

  step: int | None
  finished: bool = False
  changes: dict = dataclasses.field(default_factory=dict)
  damaged: tuple = ()
  start_over: bool = False
  at_update: int | None = None


def write_json_atomic(path: str, obj: Any) -> None:
  """`obj` as JSON in `path`, replaced in one rename (a reader never sees half a file)."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _show(v: Any) -> str:
  return json.dumps(v) if not isinstance(v, str) else repr(v)


def plan_run(
  run_dir: str,
  config: dict,
  checkpointer,
  *,
  start_over: bool = False,
  accept_config_changes: bool = False,
  upgrade: Callable[[dict], dict] | None = None,
) -> Plan:
  """Decides how a run uses `run_dir` (its caller holds the `RunLock`); reads only.

  config: the run's resolved config as JSON (`json.loads(config.to_json_best_effort())`).
  checkpointer: the run's `io.checkpoint.Checkpointer`.
  upgrade: maps a saved config written by an older version to today's field names before the two
    are compared (`experiment.upgrade_saved_config`).
  Raises RunDirError when the directory holds checkpoints that cannot be restored (unless
  `start_over`) or that were written with another config (unless `accept_config_changes`).
  """
  if start_over:
    return Plan(step=None, start_over=True)
  ckpt_dir = checkpointer.directory
  step, meta, damaged = checkpointer.newest_intact()
  if step is None:
    if damaged:
      listed = "; ".join(f"step {s}: {why}" for s, why in damaged[:5])
      raise RunDirError(
        f"{ckpt_dir} holds {len(damaged)} checkpoint(s) and none can be restored ({listed}). Nothing "
        f"was changed. To start this run over from update 0, rerun with --start_over (they are moved, "
        f"with the old run's metrics, to {checkpointer.set_aside_directory}); or pass another --run_dir"
      )
    return Plan(step=None)
  saved = meta.get("config")
  if saved is None and os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
    with open(os.path.join(run_dir, CONFIG_FILE)) as f:  # checkpoints written before configs travelled
      saved = json.load(f)
  if saved is not None and upgrade is not None:
    saved = upgrade(saved)
  changes = config_changes(saved, config) if saved is not None else {}
  if changes and not accept_config_changes:
    listed = "; ".join(f"{k}: {_show(o)} -> {_show(n)}" for k, (o, n) in list(changes.items())[:12])
    more = f" (and {len(changes) - 12} more)" if len(changes) > 12 else ""
    raise RunDirError(
      f"the newest checkpoint in {ckpt_dir} (update {meta.get('updates', step)}) was written with "
      f"another config; {len(changes)} field(s) differ: {listed}{more}. Nothing was changed. "
      "Resume with the run's own config (it is in config.json), rerun with "
      f"--accept_config_changes to go on with the new values (recorded in {CHANGES_FILE}), or "
      "pass another --run_dir"
    )
  return Plan(
    step=step,
    finished=bool(meta.get("finished")) and not changes,
    changes=changes,
    damaged=tuple(damaged),
    at_update=meta.get("updates", step),
  )


def apply_plan(run_dir: str, config: dict, checkpointer, plan: Plan) -> list[str]:
  """Prepares `run_dir` as `plan` says, once the run's state was restored (or built): damaged steps
  (or, starting over, every step and the run's files) moved aside, `config.json` written, accepted
  changes recorded. Returns the paths things were moved to."""
  moved = []
  if plan.start_over:
    moved += [checkpointer.set_aside(s, "--start_over") for s in checkpointer.step_dirs()]
    files = [n for n in RUN_FILES if os.path.exists(os.path.join(run_dir, n))]
    if files:
      stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
      dest = os.path.join(run_dir, SET_ASIDE_DIR, f"run_files.{stamp}")
      os.makedirs(dest)
      for n in files:
        os.rename(os.path.join(run_dir, n), os.path.join(dest, n))
      moved.append(dest)
  moved += [checkpointer.set_aside(s, why) for s, why in plan.damaged]
  write_json_atomic(os.path.join(run_dir, CONFIG_FILE), config)
  if plan.changes:
    with open(os.path.join(run_dir, CHANGES_FILE), "a") as f:
      f.write(
        json.dumps(
          {
            "time": _now(),
            "at_update": plan.at_update,
            "checkpoint": plan.step,
            "changes": {k: {"old": o, "new": n} for k, (o, n) in plan.changes.items()},
          }
        )
        + "\n"
      )
  return moved


_DISK_ERRNOS = {
  errno.ENOSPC: "the disk is full",
  errno.EDQUOT: "the disk quota is exhausted",
  errno.EROFS: "the file system is read-only",
  errno.EACCES: "permission denied",
  errno.EPERM: "permission denied",
  errno.EFBIG: "a file grew past the size limit",
  errno.EIO: "an input/output error",
}


def disk_error(error: BaseException) -> OSError | None:
  """The OSError of a failed write (full disk, quota, read-only, permission) in `error`'s chain; a
  tensorstore error (orbax's writes) names its errno as `[os_error_code='28']` in its message."""
  seen = set()
  e: BaseException | None = error
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
      return e
    code = re.search(r"os_error_code='(\d+)'", str(e))
    if code is not None and int(code.group(1)) in _DISK_ERRNOS:
      return OSError(int(code.group(1)), os.strerror(int(code.group(1))))
    e = e.__cause__ or e.__context__
  return None


def _size(nbytes: float) -> str:
  return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def describe_write_failure(error: OSError, what: str, path: str, resume: str) -> str:
  """One paragraph for a write that failed: what, where, why, free space, how to resume."""
  try:
    usage = shutil.disk_usage(path if os.path.exists(path) else os.path.dirname(path) or ".")
    space = f"{_size(usage.free)} free of {_size(usage.total)} there"
  except OSError:
    space = "free space unknown"
  return (
    f"could not write {what} in {path}: {_DISK_ERRNOS.get(error.errno, error.strerror)} "
    f"({error.strerror}); {space}. {resume}. Free some space (or fix the permissions), then "
    "rerun the same command to resume from it"
  )
