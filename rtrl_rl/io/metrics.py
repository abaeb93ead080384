"""Metrics of a run: one JSON object per line in ``<run_dir>/metrics.jsonl`` plus TensorBoard scalars.

* :class:`MetricsWriter` appends one line per :meth:`~MetricsWriter.write` and flushes it, so a crash loses at
  most the line being written; nothing is accumulated in memory (the TensorBoard writer keeps a small bounded
  queue and flushes it every few seconds). Numpy / JAX scalars and 0-d arrays become Python numbers, small
  arrays become lists (JSON only; TensorBoard gets the numeric scalars). Non-finite floats are written as
  ``NaN`` / ``Infinity`` (what Python's ``json`` reads back).
* On a non-primary process (``is_primary=False``, default ``jax.process_index() == 0``) the writer is a no-op
  and creates no file; :class:`NullMetricsWriter` is the same thing by name.
* :func:`read_metrics` reads the lines back, skipping a truncated last line (a crash mid-write) and any other
  line that does not parse.

Reopening an existing run directory appends (a resumed run continues the same file); if the file ends in a
partial line it is terminated first so the next record starts on its own line.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import time
from typing import Any, Mapping

import numpy as np

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_SUBDIR = 'tb'

_log = logging.getLogger(__name__)


def to_jsonable(value: Any) -> Any:
  """Converts numpy / JAX scalars and arrays (recursively inside dicts, lists, tuples) to JSON types."""
  if value is None or isinstance(value, (bool, str)):
    return value
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, os.PathLike):
    return os.fspath(value)
  if hasattr(value, '__array__') or isinstance(value, np.generic):
    arr = np.asarray(value)
    if arr.dtype.kind in 'biuUS':
      return arr.tolist()
    try:
      return arr.astype(np.float64).tolist()  # floats incl. bfloat16 / float8 (ml_dtypes)
    except (TypeError, ValueError):
      pass
  raise TypeError(f'cannot convert {type(value).__name__} to JSON: {value!r}')


def _scalar_items(record: Mapping[str, Any]):
  """(name, float) pairs of the record's numeric scalars (for TensorBoard)."""
  for key, value in record.items():
    if isinstance(value, bool):
      yield key, float(value)
    elif isinstance(value, (int, float)):
      yield key, float(value)


def _default_is_primary() -> bool:
  import jax  # noqa: PLC0415 - start-up time: launch.status and plot read metrics without jax

  return jax.process_index() == 0


class MetricsWriter:
  """Appends metrics records to ``<run_dir>/metrics.jsonl`` and to TensorBoard (``<run_dir>/tb``).

  Usage::

    with MetricsWriter(run_dir) as w:
      w.write({'frames': frames, 'episode_return': ret}, step=learner_step)
  """

  def __init__(
    self,
    run_dir: str | os.PathLike,
    tensorboard: bool = True,
    is_primary: bool | None = None,
    tensorboard_flush_secs: float = 10.0,
  ):
    self.run_dir = os.fspath(run_dir)
    self.is_primary = _default_is_primary() if is_primary is None else bool(is_primary)
    self.path = os.path.join(self.run_dir, METRICS_FILE)
    self._file = None
    self._tb = None
    if not self.is_primary:
      return
    os.makedirs(self.run_dir, exist_ok=True)
    needs_newline = False
    if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
      with open(self.path, 'rb') as f:
        f.seek(-1, os.SEEK_END)
        needs_newline = f.read(1) != b'\n'
    self._file = open(self.path, 'a', encoding='utf-8')  # pylint: disable=consider-using-with
    if needs_newline:
      self._file.write('\n')
      self._file.flush()
    if tensorboard:
      from tensorboardX import SummaryWriter  # noqa: PLC0415 - optional dependency (tensorboard=False)

      self._tb = SummaryWriter(
        logdir=os.path.join(self.run_dir, TENSORBOARD_SUBDIR), flush_secs=tensorboard_flush_secs
      )

  def write(self, metrics: Mapping[str, Any], step: int | None = None) -> dict | None:
    """Writes one record (``step`` and wall-clock ``time`` are added); returns the JSON-able record."""
    if self._file is None:
      return None
    record: dict[str, Any] = {}
    if step is not None:
      record['step'] = int(step)
    record['time'] = time.time()
    for key, value in metrics.items():
      record[str(key)] = to_jsonable(value)
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    if self._tb is not None:
      tb_step = record.get('step')
      for key, value in _scalar_items(record):
        if key in ('step', 'time') or not math.isfinite(value):
          continue
        self._tb.add_scalar(key, value, global_step=tb_step, walltime=record['time'])
    return record

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Closes both files; raises the first error (a full disk fails the last flush) after both are
    closed, so that nothing is retried at exit."""
    errors = []
    if self._file is not None:
      file, self._file = self._file, None
      try:
        file.close()
      except OSError as e:
        errors.append(e)
    if self._tb is not None:
      tb, self._tb = self._tb, None
      try:
        tb.close()
      except OSError as e:
        errors.append(e)
        _abandon_tensorboard(tb)
    if errors:
      raise errors[0]

  def __enter__(self) -> 'MetricsWriter':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _abandon_tensorboard(tb) -> None:
  """Stops a tensorboardX writer whose final flush failed: its worker thread and its exit hook would
  otherwise retry the flush and print tracebacks (tensorboardX ``EventFileWriter.close`` sets
  ``_closed`` only after a successful flush)."""
  for writer in tb.all_writers.values() if getattr(tb, 'all_writers', None) else ():
    ev = getattr(writer, 'event_writer', None)
    if ev is None or getattr(ev, '_closed', True):
      continue
    try:
      ev._worker.stop()  # pylint: disable=protected-access
    except Exception:  # pylint: disable=broad-except
      pass
    ev._closed = True  # pylint: disable=protected-access


class NullMetricsWriter(MetricsWriter):
  """The writer of a non-primary process: accepts every call and writes nothing."""

  def __init__(self, run_dir: str | os.PathLike = '', tensorboard: bool = True, **_):
    del tensorboard
    super().__init__(run_dir, tensorboard=False, is_primary=False)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
  """Reads ``metrics.jsonl`` of a run directory (or the file itself), skipping lines that do not parse.

  A crash while writing leaves a truncated last line; it is dropped (and logged at debug level). A missing
  file reads as no records.
  """
  path = os.fspath(run_dir)
  if os.path.isdir(path):
    path = os.path.join(path, METRICS_FILE)
  if not os.path.exists(path):
    return []
  records = []
  bad = 0
  with open(path, 'r', encoding='utf-8', errors='replace') as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        rec = json.loads(line)
      except ValueError:
        bad += 1
        continue
      if isinstance(rec, dict):
        records.append(rec)
      else:
        bad += 1
  if bad:
    _log.debug('read_metrics(%s): skipped %d unparseable line(s)', path, bad)
  return records
