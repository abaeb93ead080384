"""Issue 16, part 6: the full-scale plan (launch/full_scale_plan.py) covers every paper experiment, counts
the runs of its sweep file, computes hours = runs x agent steps / throughput, writes each experiment's
dry-run command into plan.md, and cites a source for every throughput."""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
import shlex
import subprocess
import sys

import pytest

from launch import full_scale_plan as fsp
from launch import sweep as sweeps
from rtrl_rl import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_CONFIGS = {  # issue 16's experiments of both papers
  "irie_atari",
  "irie_procgen",
  "irie_dmlab",
  "rtu_mujoco_pomdp",
  "rtu_reacher_pomdp",
  "rtu_popgym",
  "rtu_trace_conditioning",
}


@pytest.fixture(scope="module")
def plans():
  return {e.name: fsp.plan(e) for e in fsp.EXPERIMENTS}


def _config_name(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _steps(config) -> int:
  """Agent steps of one run, read here independently of full_scale_plan.budget."""
  if config.algo == "prediction":
    return config.agent.total_env_steps * config.agent.num_seeds
  return config.agent.total_env_steps


def test_the_plan_covers_every_paper_experiment_config():
  in_configs = {_config_name(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))}
  papers = {n for n in in_configs if n.startswith(("irie_", "rtu_"))}
  assert papers == PAPER_CONFIGS
  assert {_config_name(e.config) for e in fsp.EXPERIMENTS} == PAPER_CONFIGS
  assert len({e.name for e in fsp.EXPERIMENTS}) == len(fsp.EXPERIMENTS)


def test_run_counts_equal_the_sweep_files_job_counts(plans):
  by_sweep = {}
  for e in fsp.EXPERIMENTS:
    p = plans[e.name]
    if not os.path.isfile(os.path.join(ROOT, e.sweep)):
      assert p.missing and not p.groups
      continue
    with fsp._environ(e.env):
      _, runs = sweeps.load_sweep(os.path.join(ROOT, e.sweep))
    mine = [r for r in runs if r.config.partition(":")[0] == e.config]
    assert len(p.runs) == len(mine) > 0
    assert sum(g.runs for g in p.groups) == len(mine)
    assert f": {len(mine)} jobs, backend slurm" in p.dry_run.splitlines()[0]
    by_sweep.setdefault(e.sweep, [len(runs), 0])[1] += len(p.runs)
  for sweep, (
    total,
    planned,
  ) in by_sweep.items():  # a sweep shared by experiments is split, not double-counted
    assert planned == total, sweep


def test_hours_are_runs_times_steps_over_the_rate(plans):
  for e in fsp.EXPERIMENTS:
    p = plans[e.name]
    if p.missing:
      continue
    seconds = 0.0
    for r in p.runs:
      rate = fsp.THROUGHPUT[e.rate(fsp.config_args(r.config))].steps_per_s
      with fsp._environ(e.env):
        seconds += _steps(experiment.load_config(r.config)) / rate
    assert math.isclose(p.hours, seconds / 3600, rel_tol=1e-9), e.name
    for g in p.groups:
      assert math.isclose(g.hours, g.runs * g.steps / g.throughput.steps_per_s / 3600, rel_tol=1e-12)


def test_frames_are_agent_steps_times_the_action_repeat(plans):
  """The papers' action repeat: 4 on Atari and DMLab (shared/reference/seeds.md), none elsewhere."""
  repeat = {"irie_atari": 4, "irie_dmlab": 4}
  for name, p in plans.items():
    for g in p.groups:
      assert g.frames == g.steps * repeat.get(name, 1), name
  assert plans["irie_dmlab"].frames == {1_200_000_000}  # Irie et al.: < 1.2B frames on DMLab


def test_plan_md_holds_the_table_each_dry_run_command_and_its_output(tmp_path, plans):
  lines = fsp.write(str(tmp_path), list(plans.values()))
  text = (tmp_path / "full_scale_plan" / "plan.md").read_text()
  assert [line.split(":")[0] for line in lines] == [e.name for e in fsp.EXPERIMENTS]
  for e in fsp.EXPERIMENTS:
    p = plans[e.name]
    assert f"| {e.name} |" in text
    if p.missing:
      assert f"`{e.sweep}`: **no sweep file**" in text
      assert "no sweep file" in lines[fsp.EXPERIMENTS.index(e)]
      continue
    assert f"$ {fsp.dry_run_command(e)}\n" in text
    assert "\n".join(p.dry_run.splitlines()[: fsp.DRY_RUN_LINES]) in text
    assert f"{len(p.runs)} runs" in lines[fsp.EXPERIMENTS.index(e)]
  assert "GPU-hours" in text and "bench/gpu/run.sh" in text


def test_the_captured_dry_run_is_the_command_lines_output(plans):
  e = next(e for e in fsp.EXPERIMENTS if e.only)  # a sweep shared by two experiments
  argv = shlex.split(fsp.dry_run_command(e))
  assert argv[:3] == ["python", "-m", "launch.sweep"]
  out = subprocess.run(
    [sys.executable, *argv[1:]],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  assert out == plans[e.name].dry_run


def test_every_throughput_has_a_source():
  notes = open(os.path.join(ROOT, "BUILD_NOTES.md")).read()
  headings = [line[3:] for line in notes.splitlines() if line.startswith("## ")]
  measured = {t.steps_per_s: t.source for t in fsp.MEASURED.values()}
  for key, t in fsp.THROUGHPUT.items():
    assert t.steps_per_s > 0, key
    assert re.search(r"`python -m [\w.]+[^`]*`", t.source), f"{key}: no command in {t.source!r}"
    assert re.search(r"\d{4}-\d{2}-\d{2}", t.source), f"{key}: no date in {t.source!r}"
    for section in re.findall(r"BUILD_NOTES\.md '([^']+)'", t.source):
      assert any(h.startswith(section) for h in headings), f"{key}: no section {section!r} in BUILD_NOTES"
    if key in fsp.MEASURED:
      assert t.kind == "CPU measurement" and not t.extrapolation
      if t.source.startswith("BUILD_NOTES.md"):  # the figure is the one recorded there
        assert f"{t.steps_per_s:,.0f}" in notes or f"{50 * 32 / t.steps_per_s:.3f}" in notes, key
    else:  # an extrapolation reuses a measured rate and its source, and says how
      assert t.kind.startswith("CPU extrapolation: ") and len(t.extrapolation) > 20, key
      assert measured.get(t.steps_per_s) == t.source, key


def test_the_plan_follows_the_sweep_file(tmp_path):
  e = next(e for e in fsp.EXPERIMENTS if e.name == "rtu_popgym")
  sweep = tmp_path / "two.py"
  sweep.write_text(
    "def get_sweep():\n"
    "  return [{'name': f'r{s}', 'config': f'configs/rtu_popgym.py:task=Autoencode,level=hard,core=gru,"
    "seed={s},steps=300000'} for s in (0, 1)]\n"
  )
  p = fsp.plan(dataclasses.replace(e, sweep=str(sweep)))
  assert len(p.runs) == 2 and [g.rate_key for g in p.groups] == ["popgym:gru"]
  assert p.steps == {300_000}
  assert math.isclose(p.hours, 2 * 300_000 / fsp.THROUGHPUT["popgym:gru"].steps_per_s / 3600)
  assert fsp.plan(dataclasses.replace(e, sweep=str(tmp_path / "none.py"))).missing
  with pytest.raises(ValueError, match="expected configs/rtu_reacher_pomdp.py only"):
    fsp.plan(dataclasses.replace(e, config="configs/rtu_reacher_pomdp.py", sweep=str(sweep)))
