"""Issue 16, claim 4 (Elelimy et al. 2024): trace conditioning, online prediction scored by MSRE
(configs/rtu_trace_conditioning.py: ISI 7-13, ITI 80-120, 10 distractors, gamma 0.9, TD(lambda 0.9)
with Adam, every core at the non-linear RTU's budget of 832 core parameters): non-linear RTU, linear
RTU and online LRU by exact RTRL, GRU by T-BPTT at several truncations T, and the memoryless
baseline. One run per variant; its seeds (independent parameters and streams) are vmapped inside the
run. CPU jobs of 10-60 s (`make reproduce-small CLAIM=rtu_trace` runs and summarises them).

    python -m launch.sweep --sweep=launch/sweeps/claims_rtu_trace.py --backend=local --max_parallel=2

Arguments: `seeds` (a count), `Ts` (`+`-separated truncations of the GRU), `steps` (stream length).
"""

from launch.sweep import config_arg
from rtrl_rl import experiment

NAME = "claims_rtu_trace"
RTRL = ("rtu_nonlinear", "rtu_linear", "lru")


def get_sweep(arg=None):
  args = experiment.parse_args(arg, seeds=5, Ts="1+2+4+8+16", steps=200_000)
  variants = [{"cell": c} for c in RTRL + ("ff",)]
  variants += [{"cell": "gru", "T": int(t)} for t in args["Ts"].split("+") if t]
  return [
    {
      "name": "_".join(f"{v}" if k == "cell" else f"{k}{v}" for k, v in variant.items()),
      "config": "configs/rtu_trace_conditioning.py:"
      + config_arg(**variant, seeds=args["seeds"], steps=args["steps"]),
      # a metrics row per chunk of 10k steps: the learning curves
      "overrides": {"system.log_every_s": 0.001},
      "resources": {"nodes": 1, "gpus_per_node": 0, "cpus": 1, "time_min": 30},
    }
    for variant in variants
  ]
