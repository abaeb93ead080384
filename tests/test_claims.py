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

import os
import subprocess
import sys

import jax
import numpy as np

from launch import reproduce
from rtrl_rl import envs
from rtrl_rl.system import anakin
from tests.test_configs import load as load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOUND = 0.5  # 1/K with K = 2 cues
CHUNK = 200  # iterations per measurement (200 x 128 agent steps)


def _returns(mode, stop_at=None):
  """Mean episode return per CHUNK iterations over the config's budget (stops at `stop_at`)."""
  c = load_config("claims_irie_m.py", f"core=elstm,mode={mode},M=4,delay=8,cues=2,seed=0")
  fenv = envs.make_functional(c.env.id, **c.env.options.to_dict())
  runner = anakin.make("impala", fenv, c.agent)
  state = runner.init(jax.random.PRNGKey(c.seed))
  iterations = c.agent.total_env_steps // (c.agent.unroll_length * c.agent.batch_size)
  returns = []
  for _ in range(iterations // CHUNK):
    state, metrics = runner.run(state, CHUNK)
    returns.append(float(np.nanmean(metrics["mean_episode_return"])))
    if stop_at is not None and returns[-1] >= stop_at:
      break
  return returns


def test_rtrl_learns_cue_memory_with_m_below_the_span_and_tbptt_stays_at_the_bound():
  rtrl = _returns("rtrl", stop_at=BOUND + 0.2)
  tbptt = _returns("tbptt")
  print(f"\nRTRL per {CHUNK} iterations: {np.round(rtrl, 3).tolist()}\nT-BPTT: {np.round(tbptt, 3).tolist()}")
  assert rtrl[-1] >= BOUND + 0.2
  assert max(tbptt[len(tbptt) // 2 :]) <= BOUND + 0.1


def test_the_irie_m_summary_states_each_claim_with_its_numbers_and_says_when_it_fails(tmp_path):
  F = lambda m: reproduce.Final(m, m - 0.05, m + 0.05, 3)
  good = {
    f"claims_irie_m_elstm_{mode}_M{M}_L8": F(v)
    for mode, M, v in (("rtrl", 4, 0.9), ("tbptt", 4, 0.5), ("rtrl", 16, 0.95), ("tbptt", 16, 0.9))
  }
  good["claims_irie_m_ff_rtrl_M4_L8"] = F(0.5)
  table, verdicts = reproduce._irie_m(good, str(tmp_path))
  assert "| 4 (<= span) | 0.90 ± 0.05 | 0.50 ± 0.05 | +0.40 |" in table
  assert verdicts[0].startswith("claim 1 (elstm): REPRODUCES") and "M=4: 0.90" in verdicts[0]
  assert verdicts[1].startswith("claim 2 (elstm): REPRODUCES") and "M=16: +0.05" in verdicts[1]
  assert (tmp_path / "final_vs_M.png").stat().st_size > 0
  bad = dict(good, claims_irie_m_elstm_tbptt_M4_L8=F(0.88))  # T-BPTT learning below the span
  _, verdicts = reproduce._irie_m(bad, str(tmp_path))
  assert verdicts[0].startswith("claim 1 (elstm): DOES NOT REPRODUCE") and "M=4: 0.88" in verdicts[0]
  assert verdicts[1].startswith("claim 2 (elstm): DOES NOT REPRODUCE")


def test_reproduce_cli_names_bad_input_without_a_traceback(tmp_path):
  for args, says in (
    (["--claim=bogus"], "expected one of ['irie_m']"),
    (["--claim=irie_m", "--summarize_only", f"--results={tmp_path}"], "no finished run"),
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
