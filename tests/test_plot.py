"""rtrl_rl.plot on tiny synthetic runs: grouping by config-minus-seed and by `<name>_seed<k>` directories,
mean and 95% CI over seeds, a non-blank PNG, and the markdown table with the paper column."""

import json
import math
import os
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest
from scipy import stats

from rtrl_rl import plot
from rtrl_rl.io.metrics import MetricsWriter, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_run(run_dir, ys, frames_step=100, config=None, extra_every=0):
  with MetricsWriter(run_dir, tensorboard=False, is_primary=True) as w:
    for i, y in enumerate(ys):
      w.write({'frames': (i + 1) * frames_step, 'episode_return': y}, step=i)
      if extra_every and i % extra_every == 0:
        w.write({'frames': (i + 1) * frames_step, 'loss': 0.1}, step=i)  # records without the y metric
  if config is not None:
    with open(os.path.join(run_dir, 'config.json'), 'w') as f:
      json.dump(config, f)


def _t_half(values):
  values = np.asarray(values, float)
  return stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))


@pytest.fixture
def runs(tmp_path):
  root = tmp_path / 'runs'
  # group "rtrl": grouped by config minus seed (dir names do not follow a pattern); final values 10 and 14
  cfg = {
    'name': 'rtrl',
    'agent': {'cell': 'rtu', 'lr': 1e-3},
    'seed': 0,
    'env': {'id': 'cartpole', 'env_seed': 5},
  }
  _write_run(root / 'a', np.linspace(0, 10, 50), config=cfg, extra_every=3)
  _write_run(
    root / 'b', np.linspace(0, 14, 50), config=dict(cfg, seed=1, env={'id': 'cartpole', 'env_seed': 9})
  )
  # group "ff": grouped by directory name pattern; flat curves at 2 and 3 with different lengths / x grids
  _write_run(root / 'ff_seed0', np.full(40, 2.0), frames_step=125)
  _write_run(root / 'ff_seed1', np.full(60, 3.0), frames_step=100)
  return root


def test_grouping(runs):
  groups = plot.group_runs(plot.find_runs([runs]))
  assert [(g.name, [os.path.basename(r) for r in g.runs]) for g in groups] == [
    ('ff', ['ff_seed0', 'ff_seed1']),
    ('rtrl', ['a', 'b']),
  ]


def test_seeds_started_elsewhere_or_by_another_version_without_a_cache_field_group_together(tmp_path):
  """Placement fields (where the processes ran, where programs are cached) are not the experiment:
  seeds differing only there form one group; any other difference splits it (names disambiguated)."""
  cfg = {'name': 'rtrl', 'agent': {'lr': 1e-3}, 'seed': 0, 'system': {'process_id': 0}}
  _write_run(tmp_path / 'a', np.ones(5), config=cfg)
  moved = dict(cfg, seed=1, system={'process_id': 1, 'compilation_cache': '/elsewhere'})
  _write_run(tmp_path / 'b', np.ones(5), config=moved)
  _write_run(tmp_path / 'c', np.ones(5), config=dict(cfg, seed=2, agent={'lr': 1e-2}))
  groups = plot.group_runs(plot.find_runs([tmp_path]))
  assert sorted(len(g.runs) for g in groups) == [1, 2]
  assert all(g.name.startswith('rtrl[') for g in groups)


def test_plot_png_not_blank_and_table_numbers(runs, tmp_path):
  ref = tmp_path / 'ref.json'
  ref.write_text(json.dumps({'rtrl': {'value': 12.5, 'source': 'Irie et al. Tab. 1'}}))
  out = tmp_path / 'out' / 'curves.png'
  summary = plot.plot_runs([runs], out, reference=ref, points=101, final_frac=0.01)
  assert os.path.exists(out) and os.path.exists(tmp_path / 'out' / 'curves.md')

  img = mpimg.imread(out)[..., :3]
  assert img.shape[0] > 200 and img.shape[1] > 300
  non_white = (img < 0.95).any(axis=-1).mean()
  assert 0.02 < non_white < 0.9 and img.std() > 0.05
  # both groups' colours (C0 blue, C1 orange) are drawn
  blue = (
    (abs(img[..., 0] - 0.12) < 0.1) & (abs(img[..., 1] - 0.47) < 0.1) & (abs(img[..., 2] - 0.71) < 0.1)
  ).sum()
  orange = (
    (abs(img[..., 0] - 1.0) < 0.1) & (abs(img[..., 1] - 0.5) < 0.1) & (abs(img[..., 2] - 0.05) < 0.15)
  ).sum()
  assert blue > 100 and orange > 100

  g = summary['groups']
  assert set(g) == {'ff', 'rtrl'}
  # ff: flat 2 and 3 -> mean 2.5, t-interval over 2 seeds
  assert g['ff']['final_per_seed'] == pytest.approx([2.0, 3.0])
  assert g['ff']['final_mean'] == pytest.approx(2.5)
  lo, hi = g['ff']['final_ci']
  assert (hi - lo) / 2 == pytest.approx(_t_half([2.0, 3.0]))
  # rtrl: linear to 10 and 14 over the same x range -> final values 10 and 14 at the last grid point
  assert g['rtrl']['final_per_seed'] == pytest.approx([10.0, 14.0])
  assert g['rtrl']['final_mean'] == pytest.approx(12.0)

  md = (tmp_path / 'out' / 'curves.md').read_text()
  rows = [
    line
    for line in md.splitlines()
    if line.startswith('| ') and not line.startswith('| group') and '---' not in line
  ]
  cells = {r.split('|')[1].strip(): [c.strip() for c in r.split('|')[2:-1]] for r in rows}
  assert set(cells) == {'ff', 'rtrl'}
  assert cells['ff'][0] == '2' and cells['ff'][1] == '5000'  # seeds, final frames (overlap ends at 5000)
  assert cells['ff'][2] == f'2.5 ± {_t_half([2.0, 3.0]):.4g}' and cells['ff'][3] == '-'
  assert cells['rtrl'][1] == '5000' and cells['rtrl'][2] == f'12 ± {_t_half([10.0, 14.0]):.4g}'
  assert cells['rtrl'][3] == '12.5 (Irie et al. Tab. 1)'


def test_bootstrap_ci_and_resume_records(tmp_path):
  # a resumed run re-logs from an earlier x: the later records replace the earlier ones past that point
  run = tmp_path / 'r_seed0'
  with MetricsWriter(run, tensorboard=False, is_primary=True) as w:
    for x, y in [(1, 0.0), (2, 0.0), (3, 99.0), (4, 99.0), (2, 1.0), (3, 2.0), (4, 3.0)]:
      w.write({'frames': x, 'episode_return': y})
  xs, ys = plot.run_curve(read_metrics(run), 'frames', 'episode_return')
  assert xs.tolist() == [1, 2, 3, 4] and ys.tolist() == [0.0, 1.0, 2.0, 3.0]
  vals = np.array([[1.0], [2.0], [3.0], [4.0]])
  mean, lo, hi = plot.confidence_interval(vals, 'bootstrap')
  assert mean[0] == 2.5 and 1.0 <= lo[0] < 2.5 < hi[0] <= 4.0


def test_cli(runs, tmp_path):
  out = tmp_path / 'cli' / 'c.png'
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  res = subprocess.run(
    [
      sys.executable,
      '-m',
      'rtrl_rl.plot',
      f'--runs={runs / "a"},{runs / "b"},{runs / "ff_seed0"}',
      f'--out={out}',
      '--x=frames',
      '--y=episode_return',
      '--ci=bootstrap',
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=60,
    check=False,
  )
  assert res.returncode == 0, res.stderr[-2000:]
  assert out.exists() and (tmp_path / 'cli' / 'c.md').exists()
  assert '| rtrl | 2 |' in res.stdout and '| ff | 1 |' in res.stdout
