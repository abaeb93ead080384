"""Elelimy et al. 2024, trace conditioning (configs/rtu_trace_conditioning.py): online TD(lambda)
prediction scored by MSRE, every core at the budget of 832 core parameters: the non-linear and the
linear RTU and the online LRU (exact RTRL), the T-BPTT cores at several truncations T, and the
memoryless baseline. Each run computes `seeds` vmapped seeds and logs a metrics row per chunk of
10k steps (the learning curves). CPU jobs of minutes.

    python -m launch.sweep --sweep=launch/sweeps/rtu_trace_conditioning.py --backend=slurm
    # issue 16's claim 4 (make reproduce-small CLAIM=rtu_trace):
    python -m launch.sweep --sweep=launch/sweeps/rtu_trace_conditioning.py:seeds=5,Ts=1+2+4+8+16,tbptt=gru

Arguments: `seeds` (vmapped seeds per run), `Ts` (`+`-separated truncations of the T-BPTT cores),
`tbptt` (`+`-separated T-BPTT cores, from gru, lru_tbptt, lstm), `steps` (the stream's length).
"""

from launch.sweep import config_arg
from rtrl_rl import experiment

RTRL = ("rtu_nonlinear", "rtu_linear", "lru", "ff")  # ff: memoryless (its immediate gradient)


def get_sweep(arg=None):
  args = experiment.parse_args(arg, seeds=10, Ts="1+2+5+10+20", tbptt="gru+lru_tbptt", steps=200_000)
  tbptt = [c for c in args["tbptt"].split("+") if c]
  variants = [(c, None) for c in RTRL] + [(c, int(t)) for c in tbptt for t in args["Ts"].split("+") if t]
  runs = []
  for cell, T in variants:
    kw = {"cell": cell, **({"T": T} if T else {}), "seeds": args["seeds"], "steps": args["steps"]}
    runs.append(
      {
        "name": f"trace-conditioning_{cell}" + (f"_T{T}" if T else ""),
        "config": "configs/rtu_trace_conditioning.py:" + config_arg(**kw),
        "overrides": {"system.log_every_s": 0.001},  # a metrics row per chunk
        "resources": {"nodes": 1, "gpus_per_node": 0, "cpus": 1, "time_min": 60},
      }
    )
  return runs
