"""Irie et al. 2024, Atari: 5 games x {RTRL, TBPTT, feed-forward} eLSTM agents, M = 50, 3 seeds,
200M agent steps each (configs/irie_atari.py). 45 single-GPU jobs.

    python -m launch.sweep --sweep=launch/sweeps/irie_atari.py --backend=slurm --partition=<gpu>
"""

from launch.sweep import config_arg, grid

GAMES = ("Breakout", "Gravitar", "MsPacman", "Qbert", "Seaquest")
MODES = ("rtrl", "tbptt", "ff")
M = (50,)
SEEDS = (0, 1, 2)


def get_sweep():
  return grid(
    {"game": GAMES, "mode": MODES, "M": M},
    seeds=SEEDS,
    name="atari-{game}_{mode}_M{M}_seed{seed}",
    config=lambda p: (
      "configs/irie_atari.py:" + config_arg(game=p["game"], mode=p["mode"], M=p["M"], seed=p["seed"])
    ),
    seed_override=None,  # the config takes seed= as an argument
    resources={"nodes": 1, "gpus_per_node": 1, "cpus": 16, "time_min": 3 * 24 * 60},
  )
