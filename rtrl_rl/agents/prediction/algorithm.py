"""Online TD(lambda) prediction as the system layer sees it (`ALGORITHM`, rtrl_rl/agents/registry.py):
`num_seeds` vmapped streams of a JAX env, one update per step, in jitted chunks."""

from __future__ import annotations

from rtrl_rl.agents import registry
from rtrl_rl.agents.prediction import config as prediction_config
from rtrl_rl.agents.prediction import learning


class Prediction(registry.Algorithm):
  """The RTU paper's trace-conditioning learner (no actions, no episodes: the measure is the MSRE)."""

  name = "prediction"
  title = "prediction"
  backends = ("anakin",)
  single_process = True  # the seeds are vmapped on one device
  own_loop = True

  def get_config(self):
    return prediction_config.get_config()

  def configure(self, config):
    config.env.id = "jax/trace-conditioning"
    config.system.backend = "anakin"
    config.system.plot = False  # no episode returns to plot: the measure is the MSRE

  def validate(self, config, spaces):
    del spaces
    prediction_config.validate_experiment(config)

  def iterations(self, config):
    return learning.iterations(config)


ALGORITHM = Prediction()
