"""The progress line a training run prints about every 10 s.

    [3m20s] | frames 1.2M/10M (12.0%) | 83.6k steps/s 131 updates/s | return 23.4 (n=100) | lag 1.2 | queue 3/8 | ETA 1m45s

frames counts agent steps (summed over the envs); steps/s is their rate and updates/s the learner's.
An actor the trainer found stalled since the previous line is named at its end
(`| stalled: actor1 (pid 4242)`).

:class:`Progress` keeps only the previous report's counters (rates are measured between reports) and a
bounded window of recent episode returns; formatting is pure (:func:`format_progress`) and the clock is
injectable, so both are testable without sleeping.
"""

from __future__ import annotations

import collections
import math
import sys
import time
from typing import Callable, Iterable, Sequence, TextIO


def _si(x: float) -> str:
  """1234567 -> '1.23M'; 950 -> '950'."""
  x = float(x)
  for div, suffix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(x) >= div:
      v = x / div
      return f'{v:.3g}{suffix}' if v < 100 else f'{v:.0f}{suffix}'
  return f'{x:.0f}' if x == int(x) or abs(x) >= 10 else f'{x:.3g}'


def format_duration(seconds: float) -> str:
  """3725 -> '1h02m05s'; 65 -> '1m05s'; 5 -> '5s'."""
  if seconds is None or not math.isfinite(seconds):
    return '?'
  s = int(round(max(seconds, 0.0)))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  if h:
    return f'{h}h{m:02d}m{sec:02d}s'
  if m:
    return f'{m}m{sec:02d}s'
  return f'{sec}s'


def format_progress(
  *,
  elapsed_s: float,
  frames: int,
  total_frames: int | None = None,
  steps_per_s: float | None = None,
  updates_per_s: float | None = None,
  mean_return: float | None = None,
  num_returns: int = 0,
  policy_lag: float | None = None,
  queue_depth: int | None = None,
  queue_capacity: int | None = None,
  eta_s: float | None = None,
  stalled: Sequence[str] = (),
) -> str:
  """The progress line from already-computed quantities (fields that are None are left out)."""
  parts = [f'[{format_duration(elapsed_s) if elapsed_s >= 0 else "?"}]']
  frames_txt = f'frames {_si(frames)}'
  if total_frames:
    frames_txt += f'/{_si(total_frames)} ({100.0 * frames / total_frames:.1f}%)'
  parts.append(frames_txt)
  rates = []
  if steps_per_s is not None:
    rates.append(f'{_si(steps_per_s)} steps/s')
  if updates_per_s is not None:
    rates.append(
      f'{updates_per_s:.3g} updates/s' if updates_per_s < 1000 else f'{_si(updates_per_s)} updates/s'
    )
  if rates:
    parts.append(' '.join(rates))
  if mean_return is not None and num_returns:
    parts.append(f'return {mean_return:.4g} (n={num_returns})')
  else:
    parts.append('return - (n=0)')
  if policy_lag is not None:
    parts.append(f'lag {policy_lag:.3g}')
  if queue_depth is not None:
    parts.append(f'queue {queue_depth}' + (f'/{queue_capacity}' if queue_capacity else ''))
  if total_frames:
    parts.append(f'ETA {format_duration(eta_s) if eta_s is not None else "?"}')
  if stalled:
    parts.append('stalled: ' + ', '.join(stalled))
  return ' | '.join(parts)


class Progress:
  """Prints a one-line summary at most every ``interval_s`` seconds.

  Call :meth:`update` as often as convenient (every learner update); it returns the line when it printed
  one, else None. Rates are measured since the previous printed line (the first line: since the first
  call, none if that call prints it); the ETA from the average rate since the first call. Episode returns
  are kept in a window of the last ``return_window`` episodes.

  Args:
    total_frames: frames (agent steps) at which the run ends (for the percentage and ETA); None to omit.
    interval_s: minimum seconds between lines.
    return_window: how many recent episode returns the mean is over.
    clock: a ``() -> seconds`` function (``time.monotonic`` by default; inject a fake one in tests).
    stream: where lines go (stdout by default); ``print_fn`` overrides it (e.g. ``logging.info``).
  """

  def __init__(
    self,
    total_frames: int | None = None,
    interval_s: float = 10.0,
    return_window: int = 100,
    clock: Callable[[], float] = time.monotonic,
    stream: TextIO | None = None,
    print_fn: Callable[[str], None] | None = None,
    enabled: bool = True,
  ):
    self.total_frames = total_frames
    self.interval_s = float(interval_s)
    self._clock = clock
    self._stream = stream
    self._print_fn = print_fn
    self.enabled = enabled
    self._returns: collections.deque[float] = collections.deque(maxlen=return_window)
    self._stalled: list[str] = []
    self._t0 = clock()
    self._last_print_t = self._t0
    self._first: tuple[float, int] | None = None  # (time, frames) of the first call
    self._last: tuple[float, int, int] | None = None  # (time, frames, updates) the rates start at

  def add_returns(self, returns: Iterable[float]) -> None:
    """Records finished episodes' returns (non-finite values are ignored)."""
    for r in returns:
      r = float(r)
      if math.isfinite(r):
        self._returns.append(r)

  @property
  def mean_return(self) -> float | None:
    return sum(self._returns) / len(self._returns) if self._returns else None

  def _observe(self, now: float, frames: int, updates: int) -> None:
    if self._first is None:
      self._first, self._last = (now, frames), (now, frames, updates)

  def line(
    self,
    frames: int,
    updates: int,
    *,
    policy_lag: float | None = None,
    queue_depth: int | None = None,
    queue_capacity: int | None = None,
    now: float | None = None,
  ) -> str:
    """The line for these counters now (rates since the previous printed line)."""
    now = self._clock() if now is None else now
    self._observe(now, frames, updates)
    t, last_frames, last_updates = self._last
    dt = now - t
    eta = None
    if self.total_frames:
      # ETA from the average rate since the first call (steadier than the last interval's).
      total_dt = now - self._first[0]
      done = frames - self._first[1]
      remaining = max(self.total_frames - frames, 0)
      if remaining == 0:
        eta = 0.0
      elif total_dt > 0 and done > 0:
        eta = remaining / (done / total_dt)
    return format_progress(
      elapsed_s=now - self._t0,
      frames=frames,
      total_frames=self.total_frames,
      steps_per_s=(frames - last_frames) / dt if dt > 0 else None,
      updates_per_s=(updates - last_updates) / dt if dt > 0 else None,
      mean_return=self.mean_return,
      num_returns=len(self._returns),
      policy_lag=policy_lag,
      queue_depth=queue_depth,
      queue_capacity=queue_capacity,
      eta_s=eta,
      stalled=self._stalled,
    )

  def update(
    self,
    frames: int,
    updates: int,
    *,
    episode_returns: Iterable[float] = (),
    policy_lag: float | None = None,
    queue_depth: int | None = None,
    queue_capacity: int | None = None,
    stalled: Iterable[str] = (),
    force: bool = False,
  ) -> str | None:
    """Records returns and stalled actors ("actor1 (pid 4242)", shown once, on the next line);
    prints and returns the line when ``interval_s`` has passed (or ``force``)."""
    self.add_returns(episode_returns)
    self._stalled.extend(stalled)
    now = self._clock()
    self._observe(now, frames, updates)
    if not force and now - self._last_print_t < self.interval_s:
      return None
    text = self.line(
      frames,
      updates,
      policy_lag=policy_lag,
      queue_depth=queue_depth,
      queue_capacity=queue_capacity,
      now=now,
    )
    self._last_print_t, self._last, self._stalled = now, (now, frames, updates), []
    if self.enabled:
      if self._print_fn is not None:
        self._print_fn(text)
      else:
        stream = self._stream if self._stream is not None else sys.stdout
        print(text, file=stream, flush=True)
    return text
