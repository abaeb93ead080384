"""Learning curves over seeds: ``python -m rtrl_rl.plot --runs=DIR[,DIR...] --out=curves.png``.

* Runs: each ``--runs`` entry is a run directory (holding ``metrics.jsonl``) or a parent directory searched
  recursively for run directories.
* Groups: runs whose resolved config (``config.json`` in the run directory) is equal once every seed field
  (a key named ``seed`` or ending in ``_seed``, at any depth) is removed form one group, named by the
  config's ``name`` / ``experiment`` field, else by the directory name without its ``_seed<k>`` suffix
  (with a short config hash appended when two different configs would share a name). Runs without a
  ``config.json`` are grouped by directory name pattern ``<name>_seed<k>``.
* Curves: each run's ``(x, y)`` records (``--x``, default ``frames``; ``--y``, default ``episode_return``)
  are sorted by x (records re-logged after a resume replace the earlier ones past the restart point),
  optionally smoothed (``--smooth`` points), interpolated onto a common grid over the x range the group's
  seeds share, and drawn as the mean over seeds with a 95% band (``--ci=t``: Student-t interval,
  ``--ci=bootstrap``: percentile bootstrap over seeds; no band with one seed).
* Table: ``<out without extension>.md`` lists per group the seeds, the final x and the final value (each
  seed's mean over the last ``--final_frac`` of the grid; mean +- 95% CI over seeds), plus a ``paper``
  column filled from ``--reference=FILE.json`` (``{"group name": number}`` or
  ``{"group name": {"value": number, "source": "..."}}``; looked up by group name, then by the config's
  ``experiment`` / ``name`` fields). The papers' numbers live in that file, not here.

Uses matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from absl import flags

from rtrl_rl import cli
from rtrl_rl.io.metrics import METRICS_FILE, read_metrics
from rtrl_rl.io.run_dir import PLACEMENT_FIELDS, flat_config

CONFIG_FILE = 'config.json'
_SEED_DIR_RE = re.compile(r'^(?P<name>.+?)[_-]seed[_-]?(?P<seed>\d+)$')
_NAME_FIELDS = ('name', 'experiment', 'exp_name')


class PlotError(ValueError):
  """Nothing to plot, or an input that cannot be read; the message says which and what to pass."""


# -- discovering and grouping runs ------------------------------------------------------------------------


def find_runs(paths: Iterable[str | os.PathLike]) -> list[str]:
  """Run directories (those holding ``metrics.jsonl``) at or under each path, sorted, without duplicates."""
  found: set[str] = set()
  for p in paths:
    p = os.path.abspath(os.fspath(p))
    if os.path.isfile(os.path.join(p, METRICS_FILE)):
      found.add(p)
      continue
    if not os.path.isdir(p):
      raise PlotError(
        f'--runs: {p} is not a directory: pass run directories (holding {METRICS_FILE}) '
        'or directories above them'
      )
    for root, dirs, files in os.walk(p):
      dirs[:] = sorted(d for d in dirs if not d.startswith('.') and d not in ('tb', 'checkpoints'))
      if METRICS_FILE in files:
        found.add(root)
  return sorted(found)


def _strip_seeds(cfg: Any) -> Any:
  if isinstance(cfg, Mapping):
    return {k: _strip_seeds(v) for k, v in cfg.items() if not (str(k) == 'seed' or str(k).endswith('_seed'))}
  if isinstance(cfg, list):
    return [_strip_seeds(v) for v in cfg]
  return cfg


def _load_config(run_dir: str) -> dict | None:
  path = os.path.join(run_dir, CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      cfg = json.load(f)
  except (OSError, ValueError):
    return None
  return cfg if isinstance(cfg, dict) else None


def _dir_base_name(run_dir: str) -> str:
  name = os.path.basename(os.path.normpath(run_dir))
  m = _SEED_DIR_RE.match(name)
  return m.group('name') if m else name


@dataclasses.dataclass
class Group:
  name: str
  runs: list[str]
  config: dict | None = None  # the config without seeds (None when grouped by directory name)


def group_runs(run_dirs: Sequence[str]) -> list[Group]:
  """Groups runs by their config (``config.json``) minus the seeds and the placement fields (where the
  processes ran and cached their programs: `run_dir.PLACEMENT_FIELDS`, so that the seeds of one
  experiment started at other times or places stay together), or by the ``<name>_seed<k>``
  directory pattern."""
  by_key: dict[str, Group] = {}
  for run in run_dirs:
    cfg = _load_config(run)
    if cfg is not None:
      stripped = _strip_seeds(cfg)
      fields = {k: v for k, v in flat_config(stripped).items() if k not in PLACEMENT_FIELDS}
      canon = json.dumps(fields, sort_keys=True, default=str)
      key = 'cfg:' + hashlib.sha1(canon.encode()).hexdigest()
      name = next((str(cfg[f]) for f in _NAME_FIELDS if isinstance(cfg.get(f), str) and cfg[f]), None)
      name = name or _dir_base_name(run)
    else:
      stripped = None
      name = _dir_base_name(run)
      key = 'dir:' + name
    if key not in by_key:
      by_key[key] = Group(name=name, runs=[], config=stripped)
    by_key[key].runs.append(run)
  groups = list(by_key.values())
  counts: dict[str, int] = {}
  for g in groups:
    counts[g.name] = counts.get(g.name, 0) + 1
  for key, g in by_key.items():
    if counts[g.name] > 1:  # two different configs under one name: disambiguate
      g.name = f'{g.name}[{key.split(":", 1)[1][:6]}]'
  return sorted(groups, key=lambda g: g.name)


# -- curves -----------------------------------------------------------------------------------------------


def run_curve(
  records: Sequence[Mapping[str, Any]], x: str, y: str, smooth: int = 1
) -> tuple[np.ndarray, np.ndarray]:
  """The (x, y) curve of one run from its metrics records.

  Records are taken in file order; when x goes backwards (a run resumed from a checkpoint re-logs from an
  earlier point), the earlier records at or past the new x are dropped. Records missing x or y, or with a
  non-finite value, are skipped.
  """
  xs: list[float] = []
  ys: list[float] = []
  for rec in records:
    xv, yv = rec.get(x), rec.get(y)
    if isinstance(xv, bool) or isinstance(yv, bool):
      continue
    if not isinstance(xv, (int, float)) or not isinstance(yv, (int, float)):
      continue
    if not (math.isfinite(xv) and math.isfinite(yv)):
      continue
    while xs and xs[-1] >= xv:
      xs.pop()
      ys.pop()
    xs.append(float(xv))
    ys.append(float(yv))
  xa, ya = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
  if smooth > 1 and len(ya) > 1:
    k = min(int(smooth), len(ya))
    csum = np.cumsum(np.insert(ya, 0, 0.0))
    trailing = np.empty_like(ya)
    for i in range(len(ya)):  # trailing mean over the last k points (fewer at the start)
      lo = max(0, i + 1 - k)
      trailing[i] = (csum[i + 1] - csum[lo]) / (i + 1 - lo)
    ya = trailing
  return xa, ya


def confidence_interval(
  values: np.ndarray, ci: str = 't', level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean and lower / upper bounds over axis 0 (seeds); bounds are NaN with fewer than 2 seeds."""
  values = np.asarray(values, np.float64)
  n = values.shape[0]
  mean = values.mean(axis=0)
  if n < 2:
    nan = np.full_like(mean, np.nan)
    return mean, nan, nan
  if ci == 't':
    from scipy import stats  # noqa: PLC0415 - start-up time: scipy takes ~1 s to import

    half = stats.t.ppf(0.5 + level / 2, df=n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half
  if ci == 'bootstrap':
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boot_means = values[idx].mean(axis=1)
    lo = np.percentile(boot_means, 100 * (0.5 - level / 2), axis=0)
    hi = np.percentile(boot_means, 100 * (0.5 + level / 2), axis=0)
    return mean, lo, hi
  raise ValueError(f"ci must be 't' or 'bootstrap', got {ci!r}")


@dataclasses.dataclass
class GroupCurves:
  group: Group
  grid: np.ndarray  # [P]
  per_seed: np.ndarray  # [S, P]
  mean: np.ndarray
  lo: np.ndarray
  hi: np.ndarray
  final_per_seed: np.ndarray  # [S]
  final_mean: float
  final_lo: float
  final_hi: float


def group_curves(
  group: Group,
  x: str,
  y: str,
  *,
  points: int = 200,
  smooth: int = 1,
  ci: str = 't',
  final_frac: float = 0.1,
) -> GroupCurves | None:
  """Interpolates a group's runs onto a common grid and reduces over seeds; None if no run has data."""
  curves = [run_curve(read_metrics(r), x, y, smooth) for r in group.runs]
  curves = [(cx, cy) for cx, cy in curves if len(cx) > 0]
  if not curves:
    return None
  lo_x = max(float(cx[0]) for cx, _ in curves)
  hi_x = min(float(cx[-1]) for cx, _ in curves)
  if hi_x < lo_x:  # seeds do not overlap: use the union and leave NaN outside each run
    lo_x = min(float(cx[0]) for cx, _ in curves)
    hi_x = max(float(cx[-1]) for cx, _ in curves)
  grid = np.linspace(lo_x, hi_x, max(int(points), 2)) if hi_x > lo_x else np.array([lo_x])
  per_seed = np.stack(
    [np.where((grid >= cx[0]) & (grid <= cx[-1]), np.interp(grid, cx, cy), np.nan) for cx, cy in curves]
  )
  valid = ~np.isnan(per_seed).any(axis=0)
  mean = np.nanmean(per_seed, axis=0)
  lo = np.full_like(mean, np.nan)
  hi = np.full_like(mean, np.nan)
  if valid.any():
    m, lower, upper = confidence_interval(per_seed[:, valid], ci)
    mean[valid], lo[valid], hi[valid] = m, lower, upper
  tail = max(1, int(round(final_frac * len(grid))))
  final_per_seed = np.array(
    [np.nanmean(row[-tail:]) if np.isfinite(row[-tail:]).any() else np.nan for row in per_seed]
  )
  finite = final_per_seed[np.isfinite(final_per_seed)]
  if len(finite):
    fm, fl, fh = confidence_interval(finite[:, None], ci)
    final_mean, final_lo, final_hi = float(fm[0]), float(fl[0]), float(fh[0])
  else:
    final_mean = final_lo = final_hi = float('nan')
  return GroupCurves(group, grid, per_seed, mean, lo, hi, final_per_seed, final_mean, final_lo, final_hi)


# -- reference numbers and the table ----------------------------------------------------------------------


def load_reference(path: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
  """``{group: {'value': float, 'source': str | None}}`` from a JSON file (see the module docstring)."""
  if not path:
    return {}
  try:
    with open(path, encoding='utf-8') as f:
      raw = json.load(f)
  except (OSError, ValueError) as e:
    raise PlotError(
      f'--reference={path}: cannot read it ({getattr(e, "strerror", None) or e}): pass a '
      'JSON file {"group name": number}'
    ) from e
  if not isinstance(raw, Mapping):
    raise PlotError(f'--reference={path}: expected a JSON object {{"group name": number}}')
  out = {}
  for k, v in raw.items():
    if isinstance(v, Mapping):
      out[str(k)] = {'value': v.get('value'), 'source': v.get('source')}
    else:
      out[str(k)] = {'value': v, 'source': None}
  return out


def _reference_for(group: Group, reference: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
  if group.name in reference:
    return reference[group.name]
  for f in _NAME_FIELDS:
    v = (group.config or {}).get(f)
    if isinstance(v, str) and v in reference:
      return reference[v]
  return None


def _fmt(v: float) -> str:
  if v is None or not math.isfinite(v):
    return '-'
  return f'{v:.4g}'


def markdown_table(
  results: Sequence[GroupCurves], x: str, y: str, reference: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
  reference = reference or {}
  lines = [
    f'| group | seeds | final {x} | final {y} (mean ± 95% CI) | paper |',
    '| --- | --- | --- | --- | --- |',
  ]
  for r in results:
    half = (r.final_hi - r.final_lo) / 2 if math.isfinite(r.final_hi) else float('nan')
    final = _fmt(r.final_mean) + (f' ± {_fmt(half)}' if math.isfinite(half) else '')
    ref = _reference_for(r.group, reference)
    if ref is not None and ref.get('value') is not None:
      paper = _fmt(float(ref['value'])) + (f' ({ref["source"]})' if ref.get('source') else '')
    else:
      paper = '-'
    lines.append(
      f'| {r.group.name} | {len(r.final_per_seed)} | {_fmt(float(r.grid[-1]))} | {final} | {paper} |'
    )
  return '\n'.join(lines) + '\n'


# -- the figure -------------------------------------------------------------------------------------------


def plot_runs(
  runs: Sequence[str | os.PathLike],
  out: str | os.PathLike,
  x: str = 'frames',
  y: str = 'episode_return',
  *,
  reference: str | os.PathLike | Mapping[str, Any] | None = None,
  ci: str = 't',
  points: int = 200,
  smooth: int = 1,
  final_frac: float = 0.1,
  title: str | None = None,
) -> dict[str, Any]:
  """Draws the curves to ``out`` (PNG) and the table to ``<out stem>.md``; returns a summary dict.
  Raises PlotError when there is nothing to plot or an input cannot be read."""
  import matplotlib  # noqa: PLC0415 - optional dependency

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415 - optional dependency, after use('Agg')
  from matplotlib.backend_bases import FigureCanvasBase  # noqa: PLC0415 - optional dependency

  ext = os.path.splitext(os.fspath(out))[1][1:].lower()
  if ext and ext not in FigureCanvasBase.get_supported_filetypes():
    raise PlotError(f'--out={out}: matplotlib cannot write .{ext} files; name a .png (or .pdf, .svg) file')
  run_dirs = find_runs(runs)
  if not run_dirs:
    raise PlotError(
      f'no run directory (one holding {METRICS_FILE}) at or under '
      f'{", ".join(map(str, runs))}: pass the directories of runs that logged metrics '
      'with --runs'
    )
  groups = group_runs(run_dirs)
  results = [
    gc
    for g in groups
    if (gc := group_curves(g, x, y, points=points, smooth=smooth, ci=ci, final_frac=final_frac)) is not None
  ]
  if not results:
    raise PlotError(
      f'no run has records with both {x!r} and {y!r}: choose metrics the runs log '
      f'(the keys of {METRICS_FILE}) with --x and --y'
    )
  ref = reference if isinstance(reference, Mapping) else load_reference(reference)
  ref = {k: (v if isinstance(v, Mapping) else {'value': v, 'source': None}) for k, v in ref.items()}

  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  for i, r in enumerate(results):
    color = f'C{i % 10}'
    label = f'{r.group.name} (n={len(r.group.runs)})'
    if len(r.grid) == 1:
      ax.plot(r.grid, r.mean, 'o', color=color, label=label)
    else:
      ax.plot(r.grid, r.mean, color=color, lw=1.8, label=label)
    if np.isfinite(r.lo).any():
      ax.fill_between(r.grid, r.lo, r.hi, color=color, alpha=0.25, lw=0)
  ax.set_xlabel(x)
  ax.set_ylabel(y)
  ax.grid(alpha=0.3)
  ax.legend(loc='best', fontsize='small')
  ax.set_title(title or f'{y} vs {x} (mean, 95% CI over seeds)')
  fig.tight_layout()
  out = os.fspath(out)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out)
  plt.close(fig)

  table = markdown_table(results, x, y, ref)
  md_path = os.path.splitext(out)[0] + '.md'
  with open(md_path, 'w', encoding='utf-8') as f:
    f.write(f'# {y} vs {x}\n\nRuns: {", ".join(map(str, runs))}\n\n')
    f.write(table)
  return {
    'png': out,
    'md': md_path,
    'groups': {
      r.group.name: {
        'runs': r.group.runs,
        'final_mean': r.final_mean,
        'final_ci': (r.final_lo, r.final_hi),
        'final_per_seed': r.final_per_seed.tolist(),
      }
      for r in results
    },
  }


def _define_flags():
  flags.DEFINE_list('runs', None, 'Run directories or parent directories of runs.', required=True)
  flags.DEFINE_string('out', 'curves.png', 'Output PNG; the table goes next to it as <stem>.md.')
  flags.DEFINE_string('x', 'frames', 'Metric on the x axis.')
  flags.DEFINE_string('y', 'episode_return', 'Metric on the y axis.')
  flags.DEFINE_string('reference', None, 'JSON file: group name -> paper number (or {value, source}).')
  flags.DEFINE_enum('ci', 't', ['t', 'bootstrap'], 'Confidence interval over seeds.')
  flags.DEFINE_integer('points', 200, 'Points of the common x grid.')
  flags.DEFINE_integer('smooth', 1, 'Trailing moving average over this many points per run.')
  flags.DEFINE_float('final_frac', 0.1, 'Fraction of the grid the final value is averaged over.')
  flags.DEFINE_string('title', None, 'Figure title.')
  return flags.FLAGS


def main(argv) -> int:
  del argv
  f = flags.FLAGS
  cli.check_writable(f.out, '--out')
  try:
    summary = plot_runs(
      f.runs,
      f.out,
      f.x,
      f.y,
      reference=f.reference,
      ci=f.ci,
      points=f.points,
      smooth=f.smooth,
      final_frac=f.final_frac,
      title=f.title,
    )
  except PlotError as e:
    return cli.report(e, 2)
  with open(summary['md'], encoding='utf-8') as fh:
    print(fh.read(), end='')
  print(f'wrote {summary["png"]} and {summary["md"]}')
  return 0


if __name__ == '__main__':
  _define_flags()
  cli.run_absl(main)
