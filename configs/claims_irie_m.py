"""Irie et al. 2024's central claim at toy scale: RTRL learns what T-BPTT cannot when the unroll M is
shorter than the memory span (issue 16, claims 1-2).

IMPALA (as the paper) on cue memory (rtrl_rl/envs/cue_memory.py): a cue among K at the first step
must be reported `delay` steps later, so the span is `delay`. The core learns by RTRL (the exact
gradient through the whole episode, whatever M) or by T-BPTT within the M-step unroll (no gradient
reaches the cue step once M <= delay). A feed-forward agent's expected return is at most 1/K.
Every M runs `128 / M` rollouts per update, so that at a fixed budget of agent steps every M gets
the same number of updates (the paper fixes frames; the comparison here is about M alone).

    python -m rtrl_rl.train --config=configs/claims_irie_m.py:core=elstm,mode=tbptt,M=4,delay=8
    core: elstm | rtu | ff; mode: rtrl | tbptt; M: the unroll; delay: the span L; cues: K;
    steps: agent steps of the run; seed.
"""

import ml_collections

from rtrl_rl import experiment

CORES = ("elstm", "rtu", "ff")
MODES = ("rtrl", "tbptt")
STEPS_PER_UPDATE = 128  # M x batch_size: at a fixed budget of agent steps, every M gets as many updates


def get_config(arg=None):
  args = experiment.parse_args(arg, core="elstm", mode="rtrl", M=4, delay=8, cues=2, seed=0, steps=600_000)
  if args["core"] not in CORES or args["mode"] not in MODES:
    raise ValueError(
      f"core={args['core']!r}, mode={args['mode']!r}: expected a core in {CORES} and a mode in {MODES}"
    )
  if args["M"] < 1 or STEPS_PER_UPDATE % args["M"]:
    raise ValueError(
      f"M={args['M']}: expected a divisor of {STEPS_PER_UPDATE} (the agent steps of "
      "one update, the same for every M)"
    )
  c = experiment.base_config("impala")
  c.name = f"claims_irie_m_{args['core']}_{args['mode']}_M{args['M']}_L{args['delay']}"
  c.seed = args["seed"]
  c.env.id = "jax/cue-memory"
  c.env.options = ml_collections.ConfigDict({"num_cues": args["cues"], "length": args["delay"]})
  a = c.agent
  a.unroll_length = args["M"]  # M
  a.batch_size = STEPS_PER_UPDATE // args["M"]  # rollouts per update: every M updates as often
  a.total_env_steps = args["steps"]
  a.learning_rate = 6e-4  # the paper's RMSProp (eps 0.01 outside the sqrt) on the
  a.reduction = "sum"  # summed loss, as torchbeast
  a.discount = 0.9
  a.network.torso = "mlp"
  a.network.mlp_hidden_sizes = (32,)
  a.network.mlp_activation = "tanh"
  a.network.hidden_size = 32
  a.network.use_last_action = False  # the last action would be a memory for every core
  if args["core"] == "ff":
    a.network.cell = None
  else:
    a.network.cell = args["core"]
    a.network.core_mode = args["mode"]
  c.system.backend = "anakin"
  c.system.log_every_s = 2.0
  c.system.plot = False
  return c
