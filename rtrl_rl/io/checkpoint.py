"""Checkpoints of a run: any pytree of arrays plus a small JSON metadata dict, saved atomically with orbax.

This is the only module of the project that imports orbax.

Layout (``directory/<step>/``, one orbax ``CheckpointManager`` step per save)::

  state/      orbax PyTree item: a flat dict ``leaf_00000 .. leaf_NNNNN`` of host numpy arrays
  manifest/   orbax JSON item: per leaf its tree path, dtype, shape, how it is stored, CRC-32 of its bytes
  metadata/   orbax JSON item: the caller's metadata dict (step, frames, config hash, ...)

The state is flattened here (``jax.tree_util``) and rebuilt from ``target_like`` on restore, so orbax only
ever sees a flat dict of numpy arrays: no custom pytree nodes, no device layouts, no multi-host array
protocol. Every leaf is restored bitwise: dtypes that orbax's numpy path does not round-trip (bfloat16 and
the other ml_dtypes) are stored as an unsigned-integer view of the same width; typed PRNG keys
(``jax.random.key``) are stored as ``key_data`` with their implementation name and re-wrapped; zero-size
arrays are rebuilt from the manifest (orbax refuses to save them); Python scalars come back as Python
scalars. Each leaf's CRC-32 is checked on restore.

Atomicity (orbax-checkpoint 0.12, ``orbax/checkpoint/_src/path/atomicity.py``): on a POSIX filesystem a
step is written into ``<step>.orbax-checkpoint-tmp/`` (``_get_tmp_directory``); when every item is written orbax
writes ``commit_success.txt`` into it and renames it to ``<step>/`` (``AtomicRenameTemporaryPath.finalize``). A
step directory therefore appears only complete, and a process killed at any moment (SIGKILL included)
leaves at most a ``<step>.orbax-checkpoint-tmp`` directory, which is not listed as a step and which the
primary removes when it next opens the directory (so: one writing process per directory at a time). Old
steps beyond ``max_to_keep`` are deleted only after the new step is renamed into place. orbax does not fsync, so after a
machine crash (power loss) a renamed step could still hold unwritten blocks; :meth:`restore_latest`
therefore validates each candidate (``commit_success.txt``, manifest, every leaf's shape, dtype and
CRC-32) and falls back to the previous step when one does not validate. A run that resumes uses
:meth:`newest_intact` and :meth:`set_aside` instead: damaged or uncommitted steps newer than the newest
intact one are moved (never deleted) into ``set_aside_directory``, so that retention counts only
intact steps and the run's next saves never collide with a damaged step's number.

Multi-process runs: only the primary process (``is_primary``, default ``jax.process_index() == 0``) writes;
``save`` on the others is a no-op returning False. orbax is configured with the calling process as its
only active process, so a save never waits on a barrier across processes (whether or not the others call
``save``). Every process can restore (reading the shared directory). Arrays sharded across processes must be
replicated (or gathered by the caller) before ``save``: each leaf is copied to host memory from the local
process's data.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import shutil
import sys
import zlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rtrl_rl.io.metrics import to_jsonable

_log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_STATE, _MANIFEST, _METADATA = 'state', 'manifest', 'metadata'
_COMMIT_FILE = 'commit_success.txt'
_TMP_MARKER = '.orbax-checkpoint-tmp'  # orbax's temporary step directory: <step>.orbax-checkpoint-tmp
# dtypes that orbax's numpy handler (tensorstore) stores natively and restores with the same dtype.
_NATIVE_DTYPES = frozenset(
  np.dtype(d).name
  for d in (
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
  )
)
_UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


class _OrbaxTracebacks(logging.Filter):
  """Drops orbax's records of exceptions (``logging.exception`` in each of its threads): the same
  error reaches the caller of ``save`` / ``restore``, which reports it once (a full disk: one
  paragraph, not a traceback per thread)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and f'{os.sep}orbax{os.sep}' in (record.pathname or ''))


logging.getLogger('absl').addFilter(_OrbaxTracebacks())


def _quiet_abandoned_reads(hook):
  """``sys.unraisablehook`` that drops the errors of tensorstore reads still in flight when orbax's
  restore of a damaged step failed: their callbacks find orbax's event loop closed (one traceback per
  read, printed after the step was already reported as damaged). Anything else goes to ``hook``."""

  def unraisable(u):
    tb = u.exc_traceback
    while tb is not None and tb.tb_next is not None:
      tb = tb.tb_next
    if (
      isinstance(u.exc_value, RuntimeError)
      and str(u.exc_value) == 'Event loop is closed'
      and tb is not None
      and tb.tb_frame.f_code.co_name in ('_check_closed', 'call_soon_threadsafe')
    ):
      return
    hook(u)

  return unraisable


sys.unraisablehook = _quiet_abandoned_reads(sys.unraisablehook)


class CheckpointStructureError(ValueError):
  """The checkpoint's tree structure, shapes or dtypes do not match the restore target."""


class CheckpointCorruptError(RuntimeError):
  """A checkpoint step exists but cannot be read back intact (incomplete, damaged, failed checksum)."""


def _is_key(x: Any) -> bool:
  dtype = getattr(x, 'dtype', None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _to_host(x: Any) -> np.ndarray:
  """A host numpy copy of one leaf (a copy, so an async save never sees later in-place updates)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if not x.is_fully_replicated:
      raise ValueError(
        'Checkpointer.save: a leaf is sharded across processes; replicate or gather it first '
        f'(shape {x.shape}, sharding {x.sharding}).'
      )
    x = x.addressable_data(0)
  return np.array(x)


def _crc32(stored: np.ndarray) -> int:
  return zlib.crc32(np.ascontiguousarray(stored).reshape(-1).view(np.uint8)) & 0xFFFFFFFF


def _flatten_for_save(state: Any) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
  """Flattens ``state`` into orbax's flat dict of numpy arrays and the manifest of its leaves."""
  leaves_with_path, _ = jax.tree_util.tree_flatten_with_path(state)
  stored: dict[str, np.ndarray] = {}
  manifest: list[dict[str, Any]] = []
  for i, (path, leaf) in enumerate(leaves_with_path):
    rec: dict[str, Any] = {'path': jax.tree_util.keystr(path), 'name': f'leaf_{i:05d}'}
    if isinstance(leaf, (bool, int, float)) and not isinstance(leaf, np.generic):
      rec['pytype'] = type(leaf).__name__
    if _is_key(leaf):
      rec['key_impl'] = str(jax.random.key_impl(leaf))
      rec['dtype'] = str(leaf.dtype)
      rec['key_shape'] = list(leaf.shape)
      arr = _to_host(jax.random.key_data(leaf))
    else:
      arr = _to_host(leaf)
      rec['dtype'] = arr.dtype.name
    rec['shape'] = list(arr.shape)
    rec['array_dtype'] = arr.dtype.name
    if arr.dtype.name in _NATIVE_DTYPES:
      store = arr
    elif arr.dtype.itemsize in _UINT_OF_SIZE and arr.dtype.kind not in 'OUSM':
      store = arr.view(_UINT_OF_SIZE[arr.dtype.itemsize])
    else:
      raise TypeError(f'Checkpointer.save: unsupported dtype {arr.dtype} at {rec["path"]}')
    rec['stored_dtype'] = store.dtype.name
    if store.size == 0:
      rec['stored'] = False  # orbax refuses zero-size arrays; rebuilt from shape and dtype
    else:
      rec['stored'] = True
      rec['crc32'] = _crc32(store)
      stored[rec['name']] = store
    manifest.append(rec)
  return stored, manifest


def _leaf_from_stored(rec: Mapping[str, Any], stored: Mapping[str, np.ndarray]) -> Any:
  """Rebuilds one leaf (numpy array, typed key or Python scalar) from its stored array, verifying it."""
  shape = tuple(rec['shape'])
  array_dtype = np.dtype(jnp.dtype(rec['array_dtype']))
  if rec['stored']:
    if rec['name'] not in stored:
      raise CheckpointCorruptError(f'leaf {rec["path"]} ({rec["name"]}) missing from the checkpoint')
    data = np.asarray(stored[rec['name']])
    if data.dtype.name != rec['stored_dtype'] or data.shape != shape:
      raise CheckpointCorruptError(
        f'leaf {rec["path"]}: read {data.dtype}{list(data.shape)}, '
        f'expected {rec["stored_dtype"]}{list(shape)}'
      )
    if 'crc32' in rec and _crc32(data) != rec['crc32']:
      raise CheckpointCorruptError(f'leaf {rec["path"]}: CRC-32 mismatch (damaged data)')
    arr = data.view(array_dtype) if data.dtype != array_dtype else data
  else:
    arr = np.zeros(shape, array_dtype)
  if 'key_impl' in rec:
    return jax.random.wrap_key_data(jnp.asarray(arr), impl=rec['key_impl'])
  pytype = rec.get('pytype')
  if pytype is not None:
    return {'bool': bool, 'int': int, 'float': float}[pytype](arr.item())
  return arr


def _check_against_target(rec: Mapping[str, Any], path: str, target: Any) -> str | None:
  """Returns a description of the mismatch between a manifest record and a target leaf, or None."""
  if rec['path'] != path:
    return f'path {rec["path"]} in the checkpoint vs {path} in the target'
  if isinstance(target, (bool, int, float)) and not isinstance(target, np.generic):
    return None
  t_shape = getattr(target, 'shape', None)
  t_dtype = getattr(target, 'dtype', None)
  shape = tuple(rec['key_shape']) if 'key_impl' in rec else tuple(rec['shape'])
  if t_shape is not None and tuple(t_shape) != shape:
    return f'{path}: shape {list(shape)} in the checkpoint vs {list(t_shape)} in the target'
  if t_dtype is not None and str(jnp.dtype(t_dtype) if not _is_key(target) else t_dtype) != rec['dtype']:
    return f'{path}: dtype {rec["dtype"]} in the checkpoint vs {t_dtype} in the target'
  return None


def _like_target(value: Any, target: Any) -> Any:
  """Puts a restored leaf into the target leaf's form (jax array with its sharding, numpy, scalar)."""
  if isinstance(target, (jax.Array, jax.ShapeDtypeStruct)):
    sharding = getattr(target, 'sharding', None)
    if _is_key(value):
      return jax.device_put(value, sharding) if sharding is not None else value
    if sharding is not None:
      arr = np.asarray(value)
      return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])
    return jnp.asarray(value)
  if isinstance(target, np.generic):
    return np.asarray(value)[()]
  if isinstance(target, (bool, int, float)):
    return type(target)(np.asarray(value).item())
  return value


def find_subtree(leaves: Mapping[str, Any], like: Any, name: str) -> Any:
  """The subtree shaped like `like` in a checkpoint's leaves (`{tree path: leaf}`, as `restore`
  returns them without a target), stored under a path that ends in `name`: e.g. the agent's
  parameters under `.learner.params` or `.params` ("params"), whatever the state around them. The
  shortest such prefix wins (an optimiser's moments share the sub-paths under longer ones).
  Raises ValueError naming the leaf that is missing or has another shape."""
  with_path, treedef = jax.tree_util.tree_flatten_with_path(like)
  subpaths = [jax.tree_util.keystr(p) for p, _ in with_path]
  first = subpaths[0]
  prefixes = sorted(
    {k[: -len(first)] for k in leaves if k.endswith(first) and k[: -len(first)].endswith(name)}, key=len
  )
  for prefix in prefixes:
    if all(prefix + s in leaves for s in subpaths):
      out = []
      for s, (_, want) in zip(subpaths, with_path):
        got = np.asarray(leaves[prefix + s])
        if got.shape != tuple(want.shape):
          raise ValueError(
            f"checkpoint leaf {prefix + s} has shape {got.shape}; expected {tuple(want.shape)}"
          )
        out.append(got.astype(want.dtype))
      return jax.tree_util.tree_unflatten(treedef, out)
  raise ValueError(
    f"the checkpoint holds no '<prefix>{name}{first}' with the expected structure (first checkpoint "
    f"keys: {list(leaves)[:5]})"
  )


class Checkpointer:
  """Saves and restores ``(step, state pytree, metadata dict)`` in ``directory``, keeping the last few.

  Args:
    directory: where the step directories live (created by the primary process).
    max_to_keep: how many most-recent steps to keep (None keeps all).
    is_primary: whether this process writes; default ``jax.process_index() == 0``.
    async_save: write in a background thread (``save`` returns once the arrays are copied to host).
    keep_period: additionally keep every step divisible by this (orbax ``keep_period``).
    set_aside_directory: where :meth:`set_aside` moves steps (default ``<directory>_set_aside``).

  Usage::

    ckpt = Checkpointer(run_dir / 'checkpoints', max_to_keep=3)
    restored = ckpt.restore_latest(target_like=state)
    if restored is not None:
      step, state, meta = restored
    ...
    ckpt.save(step, state, {'frames': frames, 'config_hash': h})
    ckpt.close()
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    max_to_keep: int | None = 3,
    *,
    is_primary: bool | None = None,
    async_save: bool = True,
    keep_period: int | None = None,
    set_aside_directory: str | os.PathLike | None = None,
  ):
    self.directory = os.path.abspath(os.fspath(directory))
    self.is_primary = (jax.process_index() == 0) if is_primary is None else bool(is_primary)
    self.max_to_keep = max_to_keep
    self._async = async_save
    self._keep_period = keep_period
    self.set_aside_directory = os.path.abspath(
      os.fspath(set_aside_directory) if set_aside_directory is not None else self.directory + '_set_aside'
    )
    self._manager: ocp.CheckpointManager | None = None
    self._validated: tuple | None = None  # (step, records, metadata, stored) of newest_intact
    if self.is_primary:
      os.makedirs(self.directory, exist_ok=True)
      self.remove_failed_saves()
      self._get_manager()

  def remove_failed_saves(self) -> None:
    """Deletes the temporary directories of saves that never committed (a process killed mid-save, a
    write that failed on a full disk): partial writes, never a checkpoint.

    Done synchronously when the primary opens the directory, before it saves anything (orbax's own
    ``cleanup_tmp_directories`` runs in the background), and by callers after a failed save.
    """
    for name in os.listdir(self.directory):
      if _TMP_MARKER in name and name.split('.', 1)[0].isdigit():
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  # -- orbax plumbing ---------------------------------------------------------------------------------------

  def _get_manager(self) -> ocp.CheckpointManager | None:
    if self._manager is None:
      if not os.path.isdir(self.directory):
        return None  # a non-primary process before the primary created the directory
      pid = jax.process_index()
      options = ocp.CheckpointManagerOptions(
        max_to_keep=self.max_to_keep if self.is_primary else None,
        save_interval_steps=1 if self.is_primary else 0,
        keep_period=self._keep_period,
        create=False,
        read_only=not self.is_primary,
        cleanup_tmp_directories=False,  # done synchronously in remove_failed_saves
        enable_async_checkpointing=self._async,
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=pid, active_processes={pid}),
      )
      self._manager = ocp.CheckpointManager(
        self.directory, item_names=(_STATE, _MANIFEST, _METADATA), options=options
      )
    return self._manager

  # -- listing ----------------------------------------------------------------------------------------------

  def all_steps(self) -> list[int]:
    """Finalized steps on disk, ascending (a save still in flight is not listed until it is committed)."""
    if not os.path.isdir(self.directory):
      return []
    # Read the directory rather than orbax's cache: the cache includes a save still in flight and, after a
    # failed save, can miss steps still on disk.
    return sorted(
      int(name)
      for name in os.listdir(self.directory)
      if name.isdigit() and os.path.isfile(os.path.join(self.directory, name, _COMMIT_FILE))
    )

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def step_dirs(self) -> list[int]:
    """Every ``<step>`` directory on disk, ascending, committed or not (a step without orbax's commit
    marker is an interrupted or damaged save; the temporary directories of saves in flight are not
    steps)."""
    if not os.path.isdir(self.directory):
      return []
    return sorted(
      int(n)
      for n in os.listdir(self.directory)
      if n.isdigit() and os.path.isdir(os.path.join(self.directory, n))
    )

  def newest_intact(self) -> tuple[int | None, dict | None, list[tuple[int, str]]]:
    """``(step, metadata, damaged)``: the newest step that reads back intact (commit marker, manifest,
    every leaf's CRC-32; the whole step is read), its metadata, and the newer steps that do not, each
    with the reason, newest first. ``(None, None, damaged)`` when no step is intact (``damaged`` then
    lists every step; empty for a directory without checkpoints). The arrays read are kept for the
    next :meth:`restore` of that step, which then reads nothing from disk again (a resume reads its
    checkpoint once)."""
    damaged: list[tuple[int, str]] = []
    for step in reversed(self.step_dirs()):
      try:
        records, metadata = self._read_head(step)
        stored = self._read_stored(step, records)
        for rec in records:
          _leaf_from_stored(rec, stored)  # verifies shape, dtype, CRC-32
      except Exception as e:  # pylint: disable=broad-except
        damaged.append((step, f'{type(e).__name__}: {(str(e).strip().splitlines() or [""])[0][:300]}'))
        continue
      self._validated = (step, records, metadata, stored)  # the restore of this step reads no more
      return step, dict(metadata), damaged
    return None, None, damaged

  def set_aside(self, step: int, reason: str) -> str:
    """Moves step ``step`` out of the checkpoints, into ``<set_aside_directory>/<step>.<UTC time>``
    (nothing is deleted), and appends the reason to ``reasons.txt`` there. Returns the new path."""
    if not self.is_primary:
      raise RuntimeError('Checkpointer.set_aside: only the primary process changes the directory')
    self.wait_until_finished()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')
    os.makedirs(self.set_aside_directory, exist_ok=True)
    dest = os.path.join(self.set_aside_directory, f'{int(step)}.{stamp}')
    os.rename(os.path.join(self.directory, str(int(step))), dest)
    with open(os.path.join(self.set_aside_directory, 'reasons.txt'), 'a') as f:
      f.write(f'{stamp} step {int(step)} -> {os.path.basename(dest)}: {reason}\n')
    if self._manager is not None:
      self._manager.reload()  # orbax's cache of steps must not list the moved step (retention)
    _log.warning('Checkpointer: step %d moved aside to %s (%s)', step, dest, reason)
    return dest

  # -- save -------------------------------------------------------------------------------------------------

  def save(
    self,
    step: int,
    state: Any,
    metadata: Mapping[str, Any] | None = None,
    wait: bool = False,
  ) -> bool:
    """Saves ``state`` (any pytree of arrays / typed keys / scalars) and ``metadata`` at ``step``.

    Returns True when a save was started; False on a non-primary process or when ``step`` already has a
    checkpoint (e.g. the final checkpoint of a run that just saved that step). With ``wait=False`` the
    write finishes in the background; errors of a background save surface at the next ``save``,
    ``wait_until_finished`` or ``close``.
    """
    if not self.is_primary:
      return False
    step = int(step)
    manager = self._get_manager()
    assert manager is not None
    self._wait(manager)  # raises the error of a failed background save
    if step in self.all_steps():
      _log.info('Checkpointer: step %d already saved in %s; not saving again', step, self.directory)
      return False
    if step in self.step_dirs():  # an uncommitted step in the way: orbax would refuse to save
      self.set_aside(step, 'no commit marker: an interrupted or damaged save')
    stored, leaves = _flatten_for_save(state)
    self._check_free_space(sum(a.nbytes for a in stored.values()))
    manifest = {'format': FORMAT_VERSION, 'step': step, 'leaves': leaves}
    meta = to_jsonable(dict(metadata or {}))
    items = {
      _MANIFEST: ocp.args.JsonSave(manifest),
      _METADATA: ocp.args.JsonSave(meta),
    }
    if stored:
      items[_STATE] = ocp.args.PyTreeSave(stored)
    manager.save(step, args=ocp.args.Composite(**items), force=True)
    if wait:
      self._wait(manager)
    return True

  def _check_free_space(self, nbytes: int) -> None:
    """Raises OSError(ENOSPC) before writing when the file system lacks room for ``nbytes`` (plus 1 MiB
    of orbax's files): a save that fails half-way leaves orbax's error tracebacks and a partial write."""
    need = nbytes + 2**20
    free = shutil.disk_usage(self.directory).free
    if free < need:
      raise OSError(
        errno.ENOSPC,
        f'No space left on device: the checkpoint needs about {need / 2**20:.1f} '
        f'MiB, {free / 2**20:.1f} MiB are free',
        self.directory,
      )

  @staticmethod
  def _wait(manager: ocp.CheckpointManager) -> None:
    try:
      manager.wait_until_finished()
    except Exception:
      # A failed save leaves orbax's step cache out of step with the directory (the failed step's
      # predecessors already dropped from it); re-read it so retention counts only committed steps.
      manager.reload()
      raise

  def wait_until_finished(self) -> None:
    """Blocks until a background save has finished; raises its error if it failed."""
    if self._manager is not None:
      self._wait(self._manager)

  # -- restore ----------------------------------------------------------------------------------------------

  def _read_head(self, step: int) -> tuple[list[dict], dict]:
    """``(manifest records, metadata)`` of committed step ``step``."""
    manager = self._get_manager()
    step_dir = os.path.join(self.directory, str(step))
    if manager is None or not os.path.isdir(step_dir):
      raise FileNotFoundError(f'no checkpoint for step {step} in {self.directory}')
    if not os.path.exists(os.path.join(step_dir, _COMMIT_FILE)):
      raise CheckpointCorruptError(f'{step_dir} has no {_COMMIT_FILE}: not a committed checkpoint')
    head = manager.restore(
      step,
      args=ocp.args.Composite(**{_MANIFEST: ocp.args.JsonRestore(), _METADATA: ocp.args.JsonRestore()}),
    )
    manifest, metadata = head[_MANIFEST], head[_METADATA]
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT_VERSION:
      raise CheckpointCorruptError(f'{step_dir}: unreadable manifest')
    return manifest['leaves'], metadata

  def _read_stored(self, step: int, records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The stored arrays of step ``step`` by leaf name (read from disk, not yet verified)."""
    stored_names = [r['name'] for r in records if r['stored']]
    if not stored_names:
      return {}
    restore_args = {name: ocp.RestoreArgs(restore_type=np.ndarray) for name in stored_names}
    return self._get_manager().restore(
      step,
      args=ocp.args.Composite(**{_STATE: ocp.args.PyTreeRestore(restore_args=restore_args)}),
    )[_STATE]

  def restore(self, step: int, target_like: Any = None) -> tuple[Any, dict]:
    """Restores ``(state, metadata)`` of ``step``.

    With ``target_like`` (a pytree of the same structure: arrays, ``jax.ShapeDtypeStruct``, typed keys,
    scalars) the state has that structure and each leaf takes the target leaf's form: jax arrays (placed
    with the target's sharding), numpy arrays, Python scalars. Without it, the state is a dict from tree
    path (``jax.tree_util.keystr``) to numpy array / typed key / Python scalar.

    Raises:
      CheckpointStructureError: the target's structure, shapes or dtypes differ from the checkpoint's.
      CheckpointCorruptError (or an orbax / OS error): the step cannot be read back intact.
    """
    step = int(step)
    validated, self._validated = self._validated, None
    if validated is not None and validated[0] == step:  # read and checked by newest_intact just now
      _, records, metadata, stored = validated
    else:
      records, metadata = self._read_head(step)
      stored = None

    target_leaves = treedef = None
    if target_like is not None:
      target_with_path, treedef = jax.tree_util.tree_flatten_with_path(target_like)
      if len(target_with_path) != len(records):
        raise CheckpointStructureError(
          f'checkpoint step {step} has {len(records)} leaves, the target has {len(target_with_path)}; '
          f'first checkpoint paths: {[r["path"] for r in records[:5]]}, '
          f'first target paths: {[jax.tree_util.keystr(p) for p, _ in target_with_path[:5]]}'
        )
      problems = [
        msg
        for rec, (path, leaf) in zip(records, target_with_path)
        if (msg := _check_against_target(rec, jax.tree_util.keystr(path), leaf)) is not None
      ]
      if problems:
        raise CheckpointStructureError(
          f'checkpoint step {step} does not match the target ({len(problems)} leaves): '
          + '; '.join(problems[:5])
        )
      target_leaves = [leaf for _, leaf in target_with_path]

    if stored is None:
      stored = self._read_stored(step, records)
    values = [_leaf_from_stored(rec, stored) for rec in records]

    if target_like is None:
      return {rec['path']: v for rec, v in zip(records, values)}, dict(metadata)
    assert treedef is not None and target_leaves is not None
    state = jax.tree_util.tree_unflatten(treedef, [_like_target(v, t) for v, t in zip(values, target_leaves)])
    return state, dict(metadata)

  def restore_latest(self, target_like: Any = None) -> tuple[int, Any, dict] | None:
    """``(step, state, metadata)`` of the newest step that restores intact, or None when there is none.

    A step that cannot be read back (incomplete, damaged, failed checksum) is skipped with a warning and
    the previous one is tried. A structure mismatch with ``target_like`` is raised
    (:class:`CheckpointStructureError`): it is the caller's error, not damage.
    """
    try:
      self.wait_until_finished()  # so that a save of this process in flight is included
    except Exception as e:  # pylint: disable=broad-except
      _log.warning(
        'Checkpointer: a background save failed (%s: %s); restoring from what is committed',
        type(e).__name__,
        e,
      )
    for step in reversed(self.all_steps()):
      try:
        state, metadata = self.restore(step, target_like)
      except CheckpointStructureError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        _log.warning(
          'Checkpointer: step %d in %s cannot be restored (%s: %s); trying the previous one',
          step,
          self.directory,
          type(e).__name__,
          e,
        )
        continue
      return step, state, metadata
    return None

  # -- lifetime ---------------------------------------------------------------------------------------------

  def close(self) -> None:
    """Waits for a background save to finish and releases orbax's resources."""
    if self._manager is not None:
      self._manager.close()
      self._manager = None

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


__all__: Sequence[str] = ('Checkpointer', 'CheckpointCorruptError', 'CheckpointStructureError')
