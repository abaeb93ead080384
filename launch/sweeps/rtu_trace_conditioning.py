"""Elelimy et al. 2024, trace conditioning (configs/rtu_trace_conditioning.py): online TD(lambda)
prediction scored by MSRE, every core at the budget of 832 core parameters: the non-linear and the
linear RTU and the online LRU (exact RTRL), GRU and LRU by T-BPTT at several truncations T, and the
memoryless baseline. Each run computes `seeds` vmapped seeds. CPU jobs of minutes.

    python -m launch.sweep --sweep=launch/sweeps/rtu_trace_conditioning.py --backend=slurm

Arguments: `seeds` (vmapped seeds per run), `Ts` (`+`-separated truncations of the T-BPTT cores).
"""

from launch.sweep import config_arg
from rtrl_rl import experiment

RTRL = ("rtu_nonlinear", "rtu_linear", "lru", "ff")  # ff: memoryless (its immediate gradient)
TBPTT = ("gru", "lru_tbptt")


def get_sweep(arg=None):
  args = experiment.parse_args(arg, seeds=10, Ts="1+2+5+10+20")
  variants = [(c, None) for c in RTRL] + [(c, int(t)) for c in TBPTT for t in args["Ts"].split("+") if t]
  runs = []
  for cell, T in variants:
    kw = {"cell": cell, **({"T": T} if T else {}), "seeds": args["seeds"]}
    runs.append(
      {
        "name": f"trace-conditioning_{cell}" + (f"_T{T}" if T else ""),
        "config": "configs/rtu_trace_conditioning.py:" + config_arg(**kw),
        "resources": {"nodes": 1, "gpus_per_node": 0, "cpus": 1, "time_min": 60},
      }
    )
  return runs
