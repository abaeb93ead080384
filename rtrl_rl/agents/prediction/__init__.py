"""Online TD(lambda) prediction with recurrent cores (the RTU paper's trace-conditioning learner).

    from rtrl_rl.agents import prediction
    config = prediction.get_config(); prediction.validate(config)
    learner = prediction.make_learner(config, input_size)
    state = learner.init(key)
    state, metrics = learner.run(state, stream)     # jitted; metrics: prediction, td_error, msre
The experiment config: configs/rtu_trace_conditioning.py; the entry point:
    python -m rtrl_rl.train --config=configs/rtu_trace_conditioning.py:cell=rtu_nonlinear
"""

from rtrl_rl.agents.prediction.config import (
  get_config,
  hidden_size_for_budget,
  param_count,
  validate,
)
from rtrl_rl.agents.prediction.learning import (
  Learner,
  LearnerState,
  Stream,
  StreamState,
  Window,
  iterations,
  make_learner,
  make_optimizer,
  make_stream,
  msre,
  msre_report,
  run_experiment,
  stream_next,
  stream_start,
)

__all__ = [
  "Learner",
  "LearnerState",
  "Stream",
  "StreamState",
  "Window",
  "get_config",
  "hidden_size_for_budget",
  "iterations",
  "make_learner",
  "make_optimizer",
  "make_stream",
  "msre",
  "msre_report",
  "param_count",
  "run_experiment",
  "stream_next",
  "stream_start",
  "validate",
]
