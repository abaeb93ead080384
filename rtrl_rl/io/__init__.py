"""Run-directory I/O: checkpoints (orbax), metrics (JSONL + TensorBoard), progress line.

`rtrl_rl.io.checkpoint` is the only module of the project that imports orbax; it is imported lazily
here so that `from rtrl_rl.io import MetricsWriter` does not pay for orbax's import.
"""

from rtrl_rl.io.metrics import MetricsWriter, NullMetricsWriter, read_metrics, to_jsonable
from rtrl_rl.io.progress import Progress

__all__ = [
  'Checkpointer',
  'CheckpointCorruptError',
  'CheckpointStructureError',
  'MetricsWriter',
  'NullMetricsWriter',
  'Progress',
  'read_metrics',
  'to_jsonable',
]


def __getattr__(name):
  if name in ('Checkpointer', 'CheckpointCorruptError', 'CheckpointStructureError'):
    from rtrl_rl.io import checkpoint  # noqa: PLC0415 - start-up time: orbax (see the docstring)

    return getattr(checkpoint, name)
  raise AttributeError(f'module "rtrl_rl.io" has no attribute {name!r}')
