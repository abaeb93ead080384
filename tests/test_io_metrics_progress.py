"""MetricsWriter / read_metrics (JSONL round trip, truncated last line, TensorBoard events, non-primary no-op)
and the Progress line (content, rate limiting) with a fake clock."""

import glob
import io
import json
import os

import jax.numpy as jnp
import numpy as np

from rtrl_rl.io.metrics import MetricsWriter, NullMetricsWriter, read_metrics, to_jsonable
from rtrl_rl.io.progress import Progress, format_duration


def test_to_jsonable_converts_numpy_and_jax():
  out = to_jsonable(
    {
      'a': np.float32(1.5),
      'b': jnp.int32(3),
      'c': jnp.asarray(2.0, jnp.bfloat16),
      'd': np.arange(3),
      'e': np.bool_(True),
      'f': (1, np.int64(2)),
      'g': None,
    }
  )
  assert out == {'a': 1.5, 'b': 3, 'c': 2.0, 'd': [0, 1, 2], 'e': True, 'f': [1, 2], 'g': None}
  json.dumps(out)


def test_metrics_round_trip_truncated_line_and_resume(tmp_path):
  run = tmp_path / 'run'
  with MetricsWriter(run, tensorboard=False, is_primary=True) as w:
    for i in range(5):
      rec = w.write(
        {'frames': np.int64(100 * i), 'episode_return': jnp.float32(i / 2), 'loss/pi': np.float64(0.1)},
        step=i,
      )
      assert rec['frames'] == 100 * i
    # the line is on disk as soon as write returns (flushed), before close
    assert len(read_metrics(run)) == 5
  recs = read_metrics(run)
  assert [r['step'] for r in recs] == list(range(5))
  assert [r['episode_return'] for r in recs] == [0.0, 0.5, 1.0, 1.5, 2.0]
  assert all(isinstance(r['frames'], int) and 'time' in r for r in recs)
  # a crash mid-write leaves a truncated last line: it is skipped
  with open(run / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 5, "frames": 50')
  assert len(read_metrics(run)) == 5
  assert len(read_metrics(run / 'metrics.jsonl')) == 5  # the file path works too
  # a resumed writer starts a fresh line after the fragment
  with MetricsWriter(run, tensorboard=False, is_primary=True) as w:
    w.write({'frames': 600}, step=6)
  recs = read_metrics(run)
  assert [r['step'] for r in recs] == [0, 1, 2, 3, 4, 6]
  assert read_metrics(tmp_path / 'missing') == []


def test_tensorboard_event_file_written(tmp_path):
  run = tmp_path / 'run'
  with MetricsWriter(run, tensorboard=True, is_primary=True) as w:
    for i in range(3):
      w.write({'episode_return': float(i), 'nan_metric': float('nan'), 'name': 'x'}, step=i)
  events = glob.glob(str(run / 'tb' / 'events.out.tfevents.*'))
  assert len(events) == 1 and os.path.getsize(events[0]) > 0
  with open(events[0], 'rb') as f:
    assert b'episode_return' in f.read()


def test_non_primary_writer_is_a_no_op(tmp_path):
  run = tmp_path / 'run'
  for w in (MetricsWriter(run, is_primary=False), NullMetricsWriter(run)):
    assert w.write({'a': 1}, step=0) is None
    w.flush()
    w.close()
  assert not run.exists()


class FakeClock:
  def __init__(self, t=1000.0):
    self.t = t

  def __call__(self):
    return self.t


def test_progress_line_content_and_rate_limit():
  clock = FakeClock()
  out = io.StringIO()
  p = Progress(total_frames=1_000_000, interval_s=10.0, clock=clock, stream=out, return_window=3)
  assert p.update(0, 0) is None  # nothing before interval_s
  clock.t += 5
  assert p.update(50_000, 10, episode_returns=[1.0, 2.0]) is None
  clock.t += 5  # 10 s since start: a line
  line = p.update(100_000, 20, episode_returns=[3.0, 4.0], policy_lag=1.5, queue_depth=3, queue_capacity=8)
  assert line is not None and out.getvalue().strip() == line
  assert 'frames 100k/1M (10.0%)' in line
  assert '| 10k steps/s 2 updates/s |' in line  # agent steps (frames) and learner updates per second
  assert 'return 3 (n=3)' in line  # window of 3: mean(2, 3, 4)
  assert 'lag 1.5' in line and 'queue 3/8' in line
  assert 'ETA 1m30s' in line  # 900k frames left at 10k steps/s
  # rate limited: calls within the next 10 s print nothing
  for _ in range(5):
    clock.t += 1.9
    assert p.update(100_000 + 1000, 21) is None
  assert len(out.getvalue().splitlines()) == 1
  clock.t += 0.6  # 10.1 s since the last line; rates are over that interval
  line = p.update(200_000, 40)
  assert line is not None and '9.9k steps/s 1.98 updates/s' in line
  assert len(out.getvalue().splitlines()) == 2
  assert p.update(200_000, 40, force=True) is not None  # force prints regardless


def test_progress_without_total_and_without_returns():
  clock = FakeClock()
  lines = []
  p = Progress(interval_s=1, clock=clock, print_fn=lines.append)
  clock.t += 2
  line = p.update(10, 1)
  assert lines == [line]
  assert 'return - (n=0)' in line and 'ETA' not in line and 'lag' not in line and 'queue' not in line
  assert '/s' not in line  # the first call prints: no interval to measure rates over (not '0 steps/s')
  assert format_duration(3725) == '1h02m05s' and format_duration(65) == '1m05s' and format_duration(5) == '5s'


def test_progress_names_stalled_actors_once_on_the_next_line():
  clock = FakeClock()
  lines = []
  p = Progress(interval_s=10, clock=clock, print_fn=lines.append)
  p.update(0, 0)
  clock.t += 4
  assert p.update(100, 1, stalled=['actor1 (pid 4242)']) is None  # kept until the next line
  clock.t += 4
  assert p.update(200, 2, stalled=['actor0 (pid 4240)']) is None
  clock.t += 4
  line = p.update(300, 3)
  assert line.endswith(' | stalled: actor1 (pid 4242), actor0 (pid 4240)')
  clock.t += 10
  assert 'stalled' not in p.update(400, 4)
