"""Irie et al. 2024, DMLab memory tasks (configs/irie_dmlab.py): 3 levels x {RTRL, TBPTT} x
M in {10, 50, 100}, 3 seeds, eLSTM on a frozen pre-trained conv stem.

The stem: a flax msgpack of `{"torso": ...}` from a pre-trained TBPTT agent, given by the
environment variable DMLAB_STEM when the sweep is launched (one stem per level:
DMLAB_STEM may contain `{level}`, e.g. /data/stems/{level}.msgpack). Without DMLAB_STEM the runs
train their stem by TBPTT within the unroll (the pre-training protocol).
"""

import os

from launch.sweep import config_arg, grid

LEVELS = ("rooms_select_nonmatching_object", "rooms_watermaze", "rooms_keys_doors_puzzle")
MODES = ("rtrl", "tbptt")
M = (10, 50, 100)
SEEDS = (0, 1, 2)


def _config(p):
  stem = os.environ.get("DMLAB_STEM", "").format(level=p["level"])
  return "configs/irie_dmlab.py:" + config_arg(
    level=p["level"], mode=p["mode"], M=p["M"], stem=stem, seed=p["seed"]
  )


def get_sweep():
  return grid(
    {"level": LEVELS, "mode": MODES, "M": M},
    seeds=SEEDS,
    name="dmlab-{level}_{mode}_M{M}_seed{seed}",
    config=_config,
    seed_override=None,
    resources={"nodes": 1, "gpus_per_node": 1, "cpus": 32, "time_min": 3 * 24 * 60},
  )
