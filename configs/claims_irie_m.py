"""Irie et al. 2024's central claim at toy scale: RTRL learns what T-BPTT cannot when the unroll M is
shorter than the memory span (issue 16, claims 1-2).

IMPALA (as the paper) on one of two memory tasks whose span is known:
* `task=cue` (default): cue memory (rtrl_rl/envs/cue_memory.py): a cue among K at the first step
  must be reported `delay` steps later, so the span is `delay`. A feed-forward agent's expected
  return is at most 1/K.
* `task=repeat_previous`: POPGym's RepeatPrevious-easy (popgym/RepeatPrevious-easy, the RTU paper's
  benchmark family): at every step, report the suit of the card shown 3 observations earlier, so
  the span is 3 (`delay` does not apply). Rewards are +-1/48 per judged step, so the entropy bonus
  is 1e-4 (IMPALA's 0.01 would outweigh them: the policy stays uniform) and the step size 1e-3; a
  feed-forward agent's expected return is at most 2 * 13/51 - 1 = -0.49 (tests/test_learning.py).
The core learns by RTRL (the exact gradient through the whole episode, whatever M) or by T-BPTT
within the M-step unroll (no gradient reaches back past the unroll's first step).
Every M runs `128 / M` rollouts per update, so that at a fixed budget of agent steps every M gets
the same number of updates (the paper fixes frames; the comparison here is about M alone).

    python -m rtrl_rl.train --config=configs/claims_irie_m.py:core=elstm,mode=tbptt,M=4,delay=8
    python -m rtrl_rl.train --config=configs/claims_irie_m.py:task=repeat_previous,core=rtu,M=2
    task: cue | repeat_previous; core: elstm | rtu | ff; mode: rtrl | tbptt; M: the unroll; delay:
    the span L of cue memory; cues: K; steps: agent steps of the run (default: 600k on cue memory,
    1.2M on RepeatPrevious); seed.
"""

import ml_collections

from rtrl_rl import experiment

TASKS = ("cue", "repeat_previous")
REPEAT_PREVIOUS_SPAN = 3  # the card shown k - 1 = 3 observations earlier (easy: k = 4)
CORES = ("elstm", "rtu", "ff")
MODES = ("rtrl", "tbptt")
STEPS_PER_UPDATE = 128  # M x batch_size: at a fixed budget of agent steps, every M gets as many updates


def get_config(arg=None):
  args = experiment.parse_args(
    arg, task="cue", core="elstm", mode="rtrl", M=4, delay=8, cues=2, seed=0, steps=0
  )
  if args["task"] not in TASKS or args["core"] not in CORES or args["mode"] not in MODES:
    raise ValueError(
      f"task={args['task']!r}, core={args['core']!r}, mode={args['mode']!r}: expected a task in {TASKS}, "
      f"a core in {CORES} and a mode in {MODES}"
    )
  cue = args["task"] == "cue"
  if args["M"] < 1 or STEPS_PER_UPDATE % args["M"]:
    raise ValueError(
      f"M={args['M']}: expected a divisor of {STEPS_PER_UPDATE} (the agent steps of "
      "one update, the same for every M)"
    )
  c = experiment.base_config("impala")
  span = args["delay"] if cue else REPEAT_PREVIOUS_SPAN
  task = "" if cue else "rp_"
  c.name = f"claims_irie_m_{task}{args['core']}_{args['mode']}_M{args['M']}_L{span}"
  c.seed = args["seed"]
  if cue:
    c.env.id = "jax/cue-memory"
    c.env.options = ml_collections.ConfigDict({"num_cues": args["cues"], "length": args["delay"]})
  else:
    c.env.id = "popgym/RepeatPrevious-easy"
  a = c.agent
  a.unroll_length = args["M"]  # M
  a.batch_size = STEPS_PER_UPDATE // args["M"]  # rollouts per update: every M updates as often
  a.total_env_steps = args["steps"] or (600_000 if cue else 1_200_000)
  # the paper's RMSProp (eps 0.01 outside the sqrt) on the summed loss, as torchbeast
  a.learning_rate = 6e-4 if cue else 1e-3
  a.entropy_cost = a.entropy_cost if cue else 1e-4
  a.reduction = "sum"
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
  c.system.log_every_updates = 32  # a row per 4,096 agent steps: the same curve on any machine
  c.system.plot = False
  return c
