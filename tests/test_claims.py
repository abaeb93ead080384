"""Issue 16, claim 1 on one small case (Irie et al. 2024): with the unroll M shorter than the memory
span, IMPALA with an RTRL eLSTM learns cue memory and T-BPTT with the same M does not.

configs/claims_irie_m.py, M=4, span 8, 2 cues, seed 0. The feed-forward bound is 1/K = 0.5: a
memoryless policy's action at the query depends only on the query observation (the same for every
cue) and the last reward (0 before the query), so it is right with probability 1/K whatever it does
(rtrl_rl/envs/cue_memory.py). T-BPTT within a 4-step unroll cannot do better either: no gradient
links the query to the cue 8 steps earlier, so the core has no reason to keep the cue. RTRL's
gradient reaches the cue across unroll boundaries. `make reproduce-small CLAIM=irie_m` runs the
whole grid (cores x M x seeds).
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from bench import bench_truncation
from launch.claims import irie_m, rtu_ppo, rtu_trace
from launch.claims.common import Final
from rtrl_rl import envs
from rtrl_rl.system import anakin
from tests.test_configs import load as load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOUND = 0.5  # 1/K with K = 2 cues
CHUNK = 200  # iterations per measurement (200 x 128 agent steps)


def _returns(mode, stop_at=None, max_chunks=None):
  """Mean episode return per CHUNK iterations over the config's budget (stops at `stop_at`, or after
  `max_chunks` chunks)."""
  c = load_config("claims_irie_m.py", f"core=elstm,mode={mode},M=4,delay=8,cues=2,seed=0")
  fenv = envs.make_functional(c.env.id, **c.env.options.to_dict())
  runner = anakin.make("impala", fenv, c.agent)
  state = runner.init(jax.random.PRNGKey(c.seed))
  iterations = c.agent.total_env_steps // (c.agent.unroll_length * c.agent.batch_size)
  returns = []
  for _ in range(min(iterations // CHUNK, max_chunks or iterations)):
    state, metrics = runner.run(state, CHUNK)
    returns.append(float(np.nanmean(metrics["mean_episode_return"])))
    if stop_at is not None and returns[-1] >= stop_at:
      break
  return returns


def test_rtrl_learns_cue_memory_with_m_below_the_span_and_tbptt_stays_at_the_bound():
  rtrl = _returns("rtrl", stop_at=BOUND + 0.2)
  # T-BPTT for as many updates as RTRL needed to learn (13 of the budget's 23 chunks, measured
  # 2026-12-07), not the whole budget: at a fixed budget, the claim's comparison (the config's doc).
  tbptt = _returns("tbptt", max_chunks=len(rtrl))
  print(f"\nRTRL per {CHUNK} iterations: {np.round(rtrl, 3).tolist()}\nT-BPTT: {np.round(tbptt, 3).tolist()}")
  assert rtrl[-1] >= BOUND + 0.2
  assert max(tbptt[len(tbptt) // 2 :]) <= BOUND + 0.1


def test_the_irie_m_summary_states_each_claim_with_its_numbers_and_says_when_it_fails(tmp_path):
  F = lambda m: Final(m, m - 0.05, m + 0.05, 3)
  good = {
    f"claims_irie_m_elstm_{mode}_M{M}_L8": F(v)
    for mode, M, v in (("rtrl", 4, 0.9), ("tbptt", 4, 0.5), ("rtrl", 16, 0.95), ("tbptt", 16, 0.9))
  }
  good["claims_irie_m_ff_rtrl_M4_L8"] = F(0.5)
  table, verdicts = irie_m.summarize_finals(good, str(tmp_path))
  assert "| 4 (<= span) | 0.90 ± 0.05 | 0.50 ± 0.05 | +0.40 |" in table
  assert verdicts[0].startswith("claim 1 (elstm): REPRODUCES") and "M=4: 0.90" in verdicts[0]
  assert verdicts[1].startswith("claim 2 (elstm): REPRODUCES") and "M=16: +0.05" in verdicts[1]
  assert (tmp_path / "final_vs_M.png").stat().st_size > 0
  bad = dict(good, claims_irie_m_elstm_tbptt_M4_L8=F(0.88))  # T-BPTT learning below the span
  _, verdicts = irie_m.summarize_finals(bad, str(tmp_path))
  assert verdicts[0].startswith("claim 1 (elstm): DOES NOT REPRODUCE") and "M=4: 0.88" in verdicts[0]
  assert verdicts[1].startswith("claim 2 (elstm): DOES NOT REPRODUCE")


def test_the_repeat_previous_summary_judges_by_its_own_span_and_bound(tmp_path):
  F = lambda m: Final(m, m - 0.05, m + 0.05, 3)
  finals = {
    "claims_irie_m_rp_rtu_rtrl_M2_L3": F(0.42),
    "claims_irie_m_rp_rtu_tbptt_M2_L3": F(-0.37),
    "claims_irie_m_rp_rtu_rtrl_M8_L3": F(0.45),
    "claims_irie_m_rp_rtu_tbptt_M8_L3": F(0.29),
    "claims_irie_m_rp_ff_rtrl_M2_L3": F(-0.49),
    "claims_irie_m_rtu_rtrl_M2_L8": F(0.1),  # a cue-memory group: not this task's
  }
  table, verdicts = irie_m.summarize_finals(finals, str(tmp_path), irie_m.TASKS["repeat_previous"])
  assert "| 2 (<= span) | 0.42 ± 0.05 | -0.37 ± 0.05 | +0.79 |" in table and "| 8 | 0.45" in table
  assert "| feed-forward (any M) | -0.49 ± 0.05 |" in table
  assert verdicts[0].startswith("claim 1 (RepeatPrevious, rtu): REPRODUCES")
  assert "criterion: RTRL >= -0.09 and T-BPTT <= -0.29" in verdicts[0]  # margins of a return in [-1, 1]
  assert verdicts[1].startswith("claim 2 (RepeatPrevious, rtu): REPRODUCES")
  finals["claims_irie_m_rp_rtu_tbptt_M2_L3"] = F(-0.2)  # T-BPTT learning below the span
  _, verdicts = irie_m.summarize_finals(finals, str(tmp_path), irie_m.TASKS["repeat_previous"])
  assert verdicts[0].startswith("claim 1 (RepeatPrevious, rtu): DOES NOT REPRODUCE")


def test_the_reacher_summary_judges_clearly_best_by_intervals_and_stale_against_fresh(tmp_path):
  F = lambda m, half=10.0: Final(m, m - half, m + half, 3)
  finals = {
    "rtu_reacher_pomdp_rtu_nonlinear": F(-150.0),
    "rtu_reacher_pomdp_rtu_linear": F(-200.0),
    "rtu_reacher_pomdp_rtu_linear_fresh": F(-230.0),
    "rtu_reacher_pomdp_gru": F(-170.0),
    "rtu_reacher_pomdp_ff": F(-260.0),
    "rtu_popgym_RepeatFirst-easy_gru": F(0.5, 0.1),  # another claim's group
  }
  table, verdicts = rtu_ppo.summarize_reacher(finals, str(tmp_path))
  assert "| Reacher-POMDP | RTU non-linear | stale | -150.00 ± 10.00 | 3 |" in table and "0.50" not in table
  assert table.index("| RTU linear | stale") < table.index("| RTU linear | fresh")
  assert verdicts[0].startswith("claim 5a (Reacher-POMDP): REPRODUCES") and "GRU -170.00" in verdicts[0]
  assert verdicts[1].startswith("claim 5c (Reacher-POMDP, RTU linear): REPRODUCES")
  assert "do not overlap" in verdicts[1]
  assert (tmp_path / "finals.png").stat().st_size > 0
  finals["rtu_reacher_pomdp_gru"] = F(-155.0)  # best by its mean, but inside the GRU's reach
  finals["rtu_reacher_pomdp_rtu_linear_fresh"] = F(-195.0)
  _, verdicts = rtu_ppo.summarize_reacher(finals, str(tmp_path))
  assert verdicts[0].startswith("claim 5a (Reacher-POMDP): DOES NOT REPRODUCE")
  assert verdicts[1].startswith("claim 5c (Reacher-POMDP, RTU linear): DOES NOT REPRODUCE")
  assert "overlap: a tie within the seeds" in verdicts[1]


def test_the_popgym_summary_says_per_rtu_whether_it_matches_the_best_baseline(tmp_path):
  F = lambda m: Final(m, m - 0.1, m + 0.1, 3)
  finals = {
    "rtu_popgym_RepeatFirst-easy_rtu_nonlinear": F(-0.45),
    "rtu_popgym_RepeatFirst-easy_rtu_linear": F(0.48),  # within the GRU's interval: a match
    "rtu_popgym_RepeatFirst-easy_gru": F(0.55),
    "rtu_popgym_RepeatFirst-easy_lru": F(-0.4),
    "rtu_popgym_RepeatFirst-easy_ff": F(-0.5),
    "rtu_popgym_CountRecall-hard_gru": F(-0.9),  # no RTU on this task: no verdict
  }
  table, verdicts = rtu_ppo.summarize_popgym(finals, str(tmp_path))
  assert "| CountRecall-hard | GRU | stale | -0.90 ± 0.10 | 3 |" in table
  assert len(verdicts) == 2
  assert verdicts[0].startswith("claim 5b (RepeatFirst-easy, RTU non-linear): DOES NOT REPRODUCE")
  assert "best baseline GRU 0.55 ± 0.10" in verdicts[0] and "feed-forward -0.50" in verdicts[0]
  assert verdicts[1].startswith("claim 5b (RepeatFirst-easy, RTU linear): REPRODUCES")


def test_reproduce_cli_names_bad_input_without_a_traceback(tmp_path):
  for args, says in (
    (
      ["--claim=bogus"],
      "expected one of ['full_scale_plan', 'irie_m', 'irie_m_rp', 'rtu_cost', 'rtu_popgym', 'rtu_reacher', "
      "'rtu_trace']",
    ),
    (["--claim=irie_m", "--summarize_only", f"--results={tmp_path}"], "no finished run"),
    (["--claim=rtu_cost", "--summarize_only", f"--results={tmp_path}"], "has not been measured"),
  ):
    out = subprocess.run(
      [sys.executable, "-m", "launch.reproduce", *args],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
    )
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, out.stderr


def _msre(m, half=0.001, seeds=5):
  return Final(m, m - half, m + half, seeds)


def test_the_trace_conditioning_summary_states_each_claim_with_its_numbers_and_says_when_it_fails(tmp_path):
  good = {
    ("rtu_nonlinear", None): _msre(0.020),
    ("rtu_linear", None): _msre(0.0235),
    ("lru", None): _msre(0.035),
    ("gru", 1): _msre(0.026),
    ("gru", 16): _msre(0.0205),
    ("ff", None): _msre(0.13),
  }
  table, verdicts = rtu_trace.summarize_msre(good, str(tmp_path))
  assert "| RTU non-linear | RTRL | 0.0200 ± 0.0010 | 5 |" in table
  assert "| GRU | T-BPTT, T=16 | 0.0205 ± 0.0010 | 5 |" in table
  assert "| memoryless | none (memoryless) | 0.1300 ± 0.0010 | 5 |" in table
  memory, nonlinear, linear, needs_t = verdicts
  assert memory.startswith("claim 4 (memory helps): REPRODUCES") and "GRU T=1 0.0260" in memory
  assert nonlinear.startswith("claim 4 (RTU non-linear best or tied): REPRODUCES")
  assert "better (95% intervals apart) than RTU linear, online LRU, GRU T=1; worse than none" in nonlinear
  assert linear.startswith("claim 4 (RTU linear best or tied): DOES NOT REPRODUCE")
  assert "worse than RTU non-linear, GRU T=16;" in linear
  assert needs_t.startswith("claim 4 (T-BPTT needs a long T): REPRODUCES") and "at T in {16}" in needs_t
  assert (tmp_path / "msre_vs_T.png").stat().st_size > 0
  bad = dict(good)
  bad["ff", None] = _msre(0.023)  # memoryless as good as some: the claim must fail

  bad[("gru", 1)] = _msre(0.0201)
  _, verdicts = rtu_trace.summarize_msre(bad, str(tmp_path))
  assert verdicts[0].startswith("claim 4 (memory helps): DOES NOT REPRODUCE")
  assert "not below it: RTU linear, online LRU" in verdicts[0]
  assert verdicts[-1].startswith("claim 4 (T-BPTT needs a long T): DOES NOT REPRODUCE")


def test_the_trace_conditioning_claim_reads_each_runs_seeds(tmp_path):
  for name, per_seed in (
    ("trace_conditioning_rtu_nonlinear", [0.02, 0.022, 0.021]),
    ("trace_conditioning_gru_T4", [0.03, 0.031, float("nan")]),
  ):
    run = tmp_path / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"name": name}))
    (run / "summary.json").write_text(json.dumps({"msre_per_seed": per_seed}))
  by = rtu_trace.msre_by_variant([str(p) for p in tmp_path.iterdir()])
  assert set(by) == {("rtu_nonlinear", None), ("gru", 4)}
  assert by["rtu_nonlinear", None].seeds == 3 and abs(by["rtu_nonlinear", None].mean - 0.021) < 1e-12
  assert by["gru", 4].seeds == 2 and by["rtu_nonlinear", None].lo < 0.021 < by["rtu_nonlinear", None].hi


def _cost_rows(growth):
  """Synthetic bench_truncation rows: T-BPTT's cost x T**growth, RTRL's one figure."""
  R = bench_truncation.Row
  rows = [R("prediction", "RTU non-linear", "rtrl", None, 3e-5)]
  rows += [R("prediction", "GRU", "tbptt", T, 1e-5 * T**growth) for T in (1, 4, 16)]
  rows += [R("ppo", "RTU non-linear", "rtrl", None, 1e-4, 0.2)]
  rows += [R("ppo", "GRU", "tbptt", T, 4e-5, 0.02 * T**growth) for T in (1, 4, 16)]
  return rows


def test_the_cost_claim_says_whether_tbptt_grows_with_t_and_where_it_passes_rtrl(tmp_path):
  lines = bench_truncation.write(_cost_rows(1.0), str(tmp_path), "header")
  assert lines[0].startswith("claim 3 (prediction, seconds per learning step): REPRODUCES")
  assert "GRU x16.0 from T=1 to T=16 (log-log slope 1.00)" in lines[0]
  assert "GRU costs more than every RTRL core from T=4" in lines[0]
  assert lines[1].startswith("claim 3 (ppo, seconds per PPO update): REPRODUCES") and "from T=16" in lines[1]
  table = (tmp_path / "table.md").read_text()
  assert "| RTU non-linear | RTRL (no truncation) | 30.0 | same | same |" in table
  assert "| GRU | T-BPTT | 0.020 (40.0) | 0.080 (40.0) | 0.320 (40.0) |" in table
  assert (tmp_path / "cost_vs_T.png").stat().st_size > 0
  assert json.loads((tmp_path / "results.json").read_text())["rows"][0]["core"] == "RTU non-linear"
  flat = bench_truncation.verdicts(_cost_rows(0.1))
  assert all("DOES NOT REPRODUCE" in line for line in flat) and "GRU never" in flat[1]


def test_the_cost_benchmark_times_an_rtrl_learner_once_and_a_tbptt_learner_at_each_t(monkeypatch):
  cores = (("RTU linear", "rtu_linear", False), ("GRU", "gru", True))
  monkeypatch.setattr(bench_truncation, "CORES", cores)  # two of the five: each compiles its own
  rows = bench_truncation.prediction_rows((1, 2), stream_steps=50, repeats=1)
  assert [(r.core, r.mode, r.T) for r in rows] == [
    ("RTU linear", "rtrl", None),
    ("GRU", "tbptt", 1),
    ("GRU", "tbptt", 2),
  ]
  assert all(np.isfinite(r.step_s) and r.step_s > 0 for r in rows)
