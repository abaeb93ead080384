"""The algorithms the system layer trains (`config.algo` -> `Algorithm`) and the interface they export.

    algo = registry.get(config.algo)        # ValueError naming the known ones
    algo.backends                           # the system backends that run it
    parts = algo.anakin(env, config.agent, mesh)      # its halves of the fully-jitted loop

Each `rtrl_rl/agents/<algo>/algorithm.py` defines one `ALGORITHM`, an `Algorithm` whose methods are
everything `rtrl_rl/system/` (and `rtrl_rl/experiment.py`) needs of it: its config defaults and
checks, which backends run it, and per backend the pieces the backend assembles (the learner's init
and update, the acting step, the batch layout). The system layer imports this module and no other
module of `rtrl_rl/agents/` (Acme's builder: the runner sees only the builder's methods).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple, Sequence

import ml_collections

# name -> the module that defines its ALGORITHM (imported when asked for: an algorithm's imports,
# e.g. flax and optax for its networks, are paid only by the runs that use it)
_MODULES = {
  "impala": "rtrl_rl.agents.impala.algorithm",
  "ppo": "rtrl_rl.agents.ppo.algorithm",
  "prediction": "rtrl_rl.agents.prediction.algorithm",
}
NAMES = tuple(_MODULES)


class ConfigError(ValueError):
  """A bad configuration, the experiment's or an algorithm's (`config.agent`): the one error type of
  every config check (`experiment.validate`, each algorithm's `validate`), which the command lines
  report as one message without a traceback.

  `ConfigError(what, problems)`: `problems` is every problem found (or one), each naming its
  fields; the message is `invalid <what> config:` followed by one problem a line. A check that
  calls another extends its own list with the other's `problems`, so all are reported at once.
  """

  def __init__(self, what: str, problems: Sequence[str] | str):
    self.what = what
    self.problems = (problems,) if isinstance(problems, str) else tuple(problems)
    super().__init__(f"invalid {what} config:\n  " + "\n  ".join(self.problems))

  def __reduce__(self):  # pickles (e.g. out of a process) with its two arguments
    return type(self), (self.what, self.problems)


class AnakinParts(NamedTuple):
  """An algorithm's halves of the fully-jitted loop (`rtrl_rl/system/anakin.py` assembles them).

  agent: the network (`rtrl_rl.networks.agent.Agent`).
  num_envs, steps_per_iteration: envs acting in one iteration, agent steps per iteration.
  total_updates: iterations in the whole run (`total_env_steps` over them).
  init_learner(key) -> learner state (with `.params`), replicated over the mesh; traceable (the
    loop reads the state's shapes with `jax.eval_shape` to compile its iteration meanwhile).
  init_actors(num_envs, key) -> actor state of that many envs (one device's share with a mesh).
  actor_axes: the actor state's env axis (a pytree prefix; None: replicated).
  collect(learner, actor, axis_name, buffer) -> (actor, batch, episode metrics): acting and the
    learner's batch for `actor`'s envs (inside a map over `axis_name` with a mesh).
  update(learner, batch) -> (learner, metrics): the learner step on the whole batch; data-parallel
    over the mesh the parts were built for (the batch split along `batch_axes`).
  scratch: None, or `(make(n), axes, of_batch(batch))`: a buffer the loop keeps between iterations
    and donates to each; `collect` receives it as `buffer`.
  """

  agent: Any
  num_envs: int
  steps_per_iteration: int
  total_updates: int
  init_learner: Callable
  init_actors: Callable
  actor_axes: Any
  collect: Callable
  update: Callable
  batch_axes: Any
  scratch: tuple | None = None


class Iterations(NamedTuple):
  """A training loop in jitted steps (on one process, or in lockstep on several), as the loop driver
  (rtrl_rl/system/trainer.py) runs it: `state = init()`, `state, metrics = step(state)`.

  steps_per_iteration: agent steps (frames) one step adds (the last may add fewer: `total_frames`).
  saved(state) -> the part a checkpoint holds; resume(state, tree, counters) -> the state with it put
    back (`counters`: the checkpoint's "updates" and "frames").
  params(state) -> the parameters (the summary's checksum).
  total_updates: steps in the whole run; total_frames: its frames (default total_updates x
    steps_per_iteration).
  relayout(leaves by tree path, host copy of saved(state)) -> saved state: a checkpoint written on
    another number of devices (ValueError when it is not one); None: not supported.
  final(state) -> dict: entries for the run's summary (also written as a last metrics record,
    prefixed "final_"); None: none.
  Metrics: per step; RL loops add `episodes`, `episode_return_sum` and `mean_episode_return` (NaN
    when no episode ended); the loop driver averages the others over the logging period.
  """

  init: Callable[[], Any]
  step: Callable[[Any], tuple[Any, dict]]
  steps_per_iteration: int
  saved: Callable[[Any], Any]
  resume: Callable[[Any, Any], Any]
  params: Callable[[Any], Any]
  total_updates: int
  total_frames: int | None = None
  relayout: Callable[[dict, Any], Any] | None = None
  final: Callable[[Any], dict] | None = None


class Algorithm:
  """What the system layer may ask of an algorithm. Subclasses implement the backends they list
  in `backends`; the others raise NotImplementedError.

  name: the `config.algo` that selects it; title: its name in messages ("PPO").
  backends: the system backends that run it ("actors", "anakin", "sync"); the first is the default.
  single_process: it runs on one process only (not in a multi-host run).
  own_loop: it supplies its whole loop (`iterations`), not the halves a backend assembles.
  """

  name: str = ""
  title: str = ""
  backends: tuple[str, ...] = ()
  single_process: bool = False
  own_loop: bool = False

  def get_config(self) -> ml_collections.ConfigDict:
    """The defaults of `config.agent`, one comment per field."""
    raise NotImplementedError

  def configure(self, config: ml_collections.ConfigDict) -> None:
    """Adjusts an experiment's other defaults to this algorithm (`experiment.base_config`)."""

  def validate(self, config: ml_collections.ConfigDict, spaces: tuple | None) -> None:
    """Raises a `ConfigError` naming every bad field of `config` (the experiment; `spaces`, the
    env's (observation, action) spaces, or None when the env was not described)."""
    raise NotImplementedError

  def split_sizes(self, agent_config) -> dict[str, int]:
    """The sizes a data-parallel loop splits over its devices (name: size), e.g. the envs."""
    raise NotImplementedError

  def anakin(self, env, agent_config, mesh=None, agent=None) -> AnakinParts:
    """Backend "anakin": the halves of the fully-jitted loop on the JAX env `env` (a FunctionalEnv),
    data-parallel over `mesh` when given; `agent`: the network (default: from the config)."""
    raise NotImplementedError(f"{self.name} does not run on backend 'anakin'")

  def host_loop(self, config, mesh=None) -> Iterations:
    """Backend "sync": acting on host envs (numpy), then one jitted update, per iteration."""
    raise NotImplementedError(f"{self.name} does not run on backend 'sync'")

  def iterations(self, config) -> Iterations:
    """An algorithm that is its own loop (`own_loop`, prediction): its iterations, whole."""
    raise NotImplementedError

  def policy(self, config, spaces: tuple, checkpoint: dict) -> "TrainedPolicy":
    """A trained run's policy (rtrl_rl/evaluate.py): its agent, the parameters out of `checkpoint`
    (`{tree path: leaf}` of the run's newest checkpoint) and how observations are prepared."""
    raise NotImplementedError

  def actor_learner(self, config, spaces: tuple) -> "ActorLearner":
    """Backend "actors": the learner's and the actor processes' parts."""
    raise NotImplementedError(f"{self.name} does not run on backend 'actors'")


class TrainedPolicy(NamedTuple):
  """agent, params: the network and a trained run's parameters; observe(obs [B, ...]) -> what the
  agent sees (PPO: normalised with the statistics frozen at the checkpoint), or None: as it is."""

  agent: Any
  params: Any
  observe: Callable | None = None


class ActorLearner(NamedTuple):
  """An algorithm's parts of the actor-process backend (rtrl_rl/system/trainer.py, actors.py).

  agent: the network.
  init_learner(seed) -> learner state (host).
  learner_step(mesh, donate) -> `(state, batch) -> (state, metrics)`, data-parallel over `mesh`.
  total_updates, frames_per_update: the run's budget in updates, agent steps per update.
  batch_size: rollouts (envs) per update, over all processes; unroll_length: steps per rollout.
  rollout_spec(num_envs) -> the shapes of one rollout of `num_envs` envs (`jax.ShapeDtypeStruct`
    leaves); batch_axes: its env axis (a pytree prefix).
  collector(env_pools, seed) -> an object with `collect_all(params, policy_version)`: one rollout
    per env pool (runs inside an actor process).
  batch_slice(rollout, start, stop) -> the rollout of envs [start, stop).
  """

  agent: Any
  init_learner: Callable
  learner_step: Callable
  total_updates: int
  frames_per_update: int
  batch_size: int
  unroll_length: int
  rollout_spec: Callable
  batch_axes: Any
  collector: Callable
  batch_slice: Callable


def get(name: str) -> Algorithm:
  """The algorithm called `name` (`config.algo`)."""
  if name not in _MODULES:
    raise ValueError(f"algo={name!r}: expected one of {NAMES}")
  return importlib.import_module(_MODULES[name]).ALGORITHM
