"""RTU paper (Elelimy et al. 2024): trace conditioning, an online PREDICTION benchmark scored by MSRE.

A recurrent layer -> linear value learns online, by semi-gradient TD(lambda), to predict the
discounted sum of future US (gamma 0.9) on Rafiee et al.'s trace-conditioning stream (ISI 7-13,
ITI 80-120, 10 distractors). Variants (`key=value,...` after the colon):

    cell=rtu_nonlinear          non-linear RTU, exact RTRL (default)
    cell=rtu_linear             linear RTU (linear recurrence, relu on the output), exact RTRL
    cell=lru                    online LRU (Zucchet et al.), exact RTRL
    cell=gru,T=10               GRU with T-BPTT, truncation T
    cell=lru_tbptt,T=10         LRU with T-BPTT
    cell=lstm,T=10              LSTM with T-BPTT
    cell=ff                     memoryless baseline: Dense(hidden)+relu -> value
  other keys: budget=<core params> (hidden size matched to it; default: the RTU's at N=32, 832),
  hidden=<N> (overrides budget), lambda=, lr=, optimizer=adam|sgd, steps=, seeds=, chunk=, window=
  (MSRE window), seed=, isi=lo-hi, iti=lo-hi, distractors=, gamma= (default 1 - 1/mean(ISI), as Rafiee
  et al.: 0.9 for ISI 7-13).

    python -m rtrl_rl.train --config=configs/rtu_trace_conditioning.py:cell=gru,T=10
"""

from __future__ import annotations

import ml_collections

from rtrl_rl import experiment
from rtrl_rl.agents.prediction import config as prediction_config

# variant -> (cell, cell_options, core_mode)
VARIANTS = {
  "rtu_nonlinear": ("rtu", {"nonlinear": True, "activation": "relu"}, "rtrl"),
  "rtu_linear": ("rtu", {"nonlinear": False, "activation": "relu"}, "rtrl"),
  "lru": ("lru", {}, "rtrl"),
  "lru_tbptt": ("lru", {}, "tbptt"),
  "gru": ("gru", {}, "tbptt"),
  "lstm": ("lstm", {}, "tbptt"),
  "ff": (None, {}, "rtrl"),
}
DEFAULT_BUDGET = 832  # the non-linear RTU's core at N=32 with 12 inputs: 2 * 12 * 32 + 2 * 32
KEYS = (
  "cell",
  "T",
  "budget",
  "hidden",
  "lambda",
  "lr",
  "optimizer",
  "steps",
  "seeds",
  "chunk",
  "window",
  "seed",
  "isi",
  "iti",
  "distractors",
  "gamma",
)


def _parse(arg: str) -> dict[str, str]:
  out = {}
  for item in filter(None, (s.strip() for s in (arg or "").split(","))):
    if "=" not in item:
      if item in VARIANTS:  # a bare variant name: "gru" == "cell=gru"
        out["cell"] = item
        continue
      raise ValueError(f"configs/rtu_trace_conditioning.py: expected key=value, got {item!r}; keys: {KEYS}")
    k, v = (s.strip() for s in item.split("=", 1))
    if k not in KEYS:
      raise ValueError(f"configs/rtu_trace_conditioning.py: unknown key {k!r}; keys: {KEYS}")
    out[k] = v
  return out


def _range(key: str, v: str) -> tuple[int, int]:
  try:
    lo, hi = (int(x) for x in v.split("-"))
  except ValueError:
    raise ValueError(f"configs/rtu_trace_conditioning.py: {key}={v!r}: expected lo-hi, e.g. 7-13") from None
  return lo, hi


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  a = _parse(arg)
  variant = a.get("cell", "rtu_nonlinear")
  if variant not in VARIANTS:
    raise ValueError(
      f"configs/rtu_trace_conditioning.py: cell={variant!r}: expected one of {tuple(VARIANTS)}"
    )
  cell, cell_options, core_mode = VARIANTS[variant]
  if "T" in a and core_mode != "tbptt":
    raise ValueError(
      f"configs/rtu_trace_conditioning.py: T={a['T']} is the truncation of the T-BPTT "
      f"variants (gru, lru_tbptt, lstm); cell={variant} learns by "
      f"{'exact RTRL' if cell else 'its immediate gradient'}"
    )

  c = experiment.base_config("prediction")  # online TD(lambda) prediction (rtrl_rl/agents/prediction)
  c.name = f"trace_conditioning_{variant}" + (f"_T{a['T']}" if "T" in a else "")  # run-dir prefix, plot group
  c.seed = int(a.get("seed", 0))  # run s of agent.num_seeds uses PRNG seed (seed + s)

  e = c.env
  e.id = "jax/trace-conditioning"  # Rafiee et al.'s trace conditioning (rtrl_rl/envs/trace_conditioning.py)
  isi = _range("isi", a["isi"]) if "isi" in a else (7, 13)
  e.options = ml_collections.ConfigDict()
  e.options.isi = isi  # ISI ~ U{lo..hi}: CS onset to US onset (the paper's setting 7-13)
  e.options.iti = _range("iti", a["iti"]) if "iti" in a else (80, 120)  # ITI ~ U{lo..hi}: US onset to next CS
  e.options.num_distractors = int(a.get("distractors", 10))  # distractor stimuli in the observation
  gamma = float(a["gamma"]) if "gamma" in a else round(1.0 - 1.0 / ((isi[0] + isi[1]) / 2), 6)
  e.options.gamma = gamma  # discount of the predicted return; MSRE scores this return
  input_size = 2 + e.options.num_distractors

  g = c.agent = prediction_config.get_config()
  g.num_seeds = int(a.get("seeds", 1))  # independent runs, vmapped
  g.total_env_steps = int(a.get("steps", 200_000))  # online stream length (one update per step)
  g.chunk_steps = int(a.get("chunk", 10_000))  # steps per jitted call and per metrics record
  g.msre_window = int(a.get("window", min(50_000, g.total_env_steps // 4)))  # final MSRE over the last steps
  n = g.network
  n.cell = cell  # the core (None: memoryless)
  n.cell_options = ml_collections.ConfigDict(cell_options)  # cells.make options (RTU: nonlinear, activation)
  n.core_mode = core_mode  # "rtrl" (RTU, online LRU) | "tbptt" (GRU, LSTM, LRU baselines)
  g.truncation = int(a.get("T", 10))  # T-BPTT window T
  budget = int(a.get("budget", DEFAULT_BUDGET))
  # hidden size: the largest within the parameter budget
  n.hidden_size = (
    int(a["hidden"])
    if "hidden" in a
    else prediction_config.hidden_size_for_budget(cell, budget, input_size, cell_options)
  )
  g.discount = gamma  # = env.options.gamma
  g.td_lambda = float(a.get("lambda", 0.9))  # TD(lambda) trace decay (Rafiee et al.'s TD learners: 0.9)
  g.optimizer = a.get("optimizer", "adam")  # Adam on the TD(lambda) direction (Rafiee et al.)
  g.learning_rate = float(a.get("lr", 1e-3))  # step size
  return c
