"""Issue 16, claims 1-2 (Irie et al. 2024): RTRL vs T-BPTT against the unroll M on cue memory with a
span of 8 steps (configs/claims_irie_m.py): eLSTM and RTU cores x {RTRL, T-BPTT} x M in {2, 4, 8,
16}, and the feed-forward floor, 3 seeds each. CPU jobs of ~30 s (`make reproduce-small
CLAIM=irie_m` runs and summarises them).

    python -m launch.sweep --sweep=launch/sweeps/claims_irie_m.py --backend=local --max_parallel=2

    python -m launch.sweep --sweep=launch/sweeps/claims_irie_m.py:task=repeat_previous --backend=local

Arguments: `task` (cue: cue memory, span 8, the default; repeat_previous: POPGym RepeatPrevious-easy,
span 3, CPU jobs of ~40 s), `seeds` (a count), `Ms` (`+`-separated), `cores` (`+`-separated, from
elstm, rtu, ff).
"""

from launch.sweep import config_arg
from rtrl_rl import experiment

NAME = "claims_irie_m"
DELAY = 8  # cue memory's span


def get_sweep(arg=None):
  args = experiment.parse_args(arg, task="cue", seeds=3, Ms="2+4+8+16", cores="elstm+rtu+ff")
  ms = [int(m) for m in args["Ms"].split("+") if m]
  cores = [c for c in args["cores"].split("+") if c]
  prefix = "" if args["task"] == "cue" else "rp_"  # the tasks' runs can share a sweep root
  runs = []
  for core in cores:
    for mode in ("rtrl",) if core == "ff" else ("rtrl", "tbptt"):
      for m in ms[:1] if core == "ff" else ms:  # the floor does not depend on M
        for seed in range(args["seeds"]):
          label = "ff" if core == "ff" else f"{core}_{mode}_M{m}"
          runs.append(
            {
              "name": f"{prefix}{label}_seed{seed}",
              "config": "configs/claims_irie_m.py:"
              + config_arg(task=args["task"], core=core, mode=mode, M=m, delay=DELAY, seed=seed),
              "resources": {"nodes": 1, "gpus_per_node": 0, "cpus": 1, "time_min": 30},
            }
          )
  return runs
