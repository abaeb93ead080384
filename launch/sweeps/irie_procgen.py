"""Irie et al. 2024, ProcGen (configs/irie_procgen.py): Chaser (hard, 500 training levels) with
M in {5, 50}, and the memory-mode games with M = 50; {RTRL, TBPTT, feed-forward}; 3 seeds.
The feed-forward agent has no recurrence, so it runs once per game (its M only sets the unroll).

Evaluate on the training and the test levels afterwards:
    python -m rtrl_rl.evaluate --run_dir=<run> --episodes=100 --repeats=3 --greedy --split=train
    python -m rtrl_rl.evaluate --run_dir=<run> --episodes=100 --repeats=3 --greedy --split=test
"""

from launch.sweep import config_arg, grid

MODES = ("rtrl", "tbptt", "ff")
MEMORY_GAMES = ("dodgeball", "heist", "maze", "miner", "caveflyer", "jumper")
SEEDS = (0, 1, 2)
RESOURCES = {"nodes": 1, "gpus_per_node": 1, "cpus": 16, "time_min": 3 * 24 * 60}


def _config(p):
  return "configs/irie_procgen.py:" + config_arg(
    game=p["game"], distribution=p["distribution"], mode=p["mode"], M=p["M"], seed=p["seed"]
  )


def get_sweep():
  name = "procgen-{game}-{distribution}_{mode}_M{M}_seed{seed}"
  chaser = grid(
    {"game": ("chaser",), "distribution": ("hard",), "mode": MODES, "M": (5, 50)},
    seeds=SEEDS,
    name=name,
    config=_config,
    seed_override=None,
    resources=RESOURCES,
    where=lambda p: p["mode"] != "ff" or p["M"] == 50,
  )
  memory = grid(
    {"game": MEMORY_GAMES, "distribution": ("memory",), "mode": MODES, "M": (50,)},
    seeds=SEEDS,
    name=name,
    config=_config,
    seed_override=None,
    resources=RESOURCES,
  )
  return chaser + memory
