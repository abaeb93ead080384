"""Timing helpers shared by the benchmarks.

Measurements on a shared machine are noisy, so every comparison is timed side by side: the callables
of one comparison are run interleaved (one sample of each, in rotating order, per round), each sample
blocks on its result (`jax.block_until_ready`), and the reported figure is the median over rounds.

    fns = {"floor": floor_thunk, "step": stateful(jitted_step, carry)}
    t = time_interleaved(fns, repeats=7)     # {"floor": seconds per call, "step": ...}

A thunk is a zero-argument callable returning what to block on. `stateful(fn, state)` makes one
from a function whose (donated) argument is the previous call's result, e.g. an in-place carry update.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax

Thunk = Callable[[], Any]


def stateful(fn: Callable[[Any], Any], state: Any, extract: Callable[[Any], Any] | None = None) -> Thunk:
  """A thunk that threads `state` through `fn`: each call does `state = extract(fn(state))`.

  For jitted functions that donate their argument (in-place updates): the old buffers are consumed,
  so the thunk must hand the new ones to the next call. `extract` picks the new state from the output
  (default: the output itself); the whole output is returned for blocking.
  """
  holder = [state]
  extract = extract or (lambda out: out)

  def thunk():
    out = fn(holder[0])
    holder[0] = extract(out)
    return out

  return thunk


def _run(thunk: Thunk, number: int) -> float:
  start = time.perf_counter()
  for _ in range(number):
    out = thunk()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / number


def calibrate(thunk: Thunk, min_sample_s: float, max_number: int = 1000) -> int:
  """Calls per sample so that one sample lasts about `min_sample_s` (at least 1)."""
  t = _run(thunk, 1)
  if t <= 0:
    return max_number
  return max(1, min(max_number, int(min_sample_s / t + 0.5)))


def time_interleaved(
  fns: dict[str, Thunk],
  *,
  repeats: int = 7,
  warmup: int = 2,
  min_sample_s: float = 0.05,
  number: dict[str, int] | None = None,
) -> dict[str, float]:
  """Median seconds per call of each thunk, timed interleaved.

  warmup: untimed calls of each thunk first (compilation, allocation). Each timed sample runs a
  thunk `number[name]` times back to back (calibrated to last about `min_sample_s` unless given),
  then blocks; its time is divided by that count. Rounds rotate the order of the thunks so that no
  one is always first after another's cache-polluting run. Returns {name: median seconds per call}.
  """
  names = list(fns)
  for name in names:
    for _ in range(warmup):
      jax.block_until_ready(fns[name]())
  number = dict(number or {})
  for name in names:
    number.setdefault(name, calibrate(fns[name], min_sample_s))
  samples: dict[str, list[float]] = {name: [] for name in names}
  for r in range(repeats):
    order = names[r % len(names) :] + names[: r % len(names)]
    for name in order:
      samples[name].append(_run(fns[name], number[name]))
  return {name: statistics.median(s) for name, s in samples.items()}
