"""Run an online prediction experiment until rtrl_rl/train.py runs algo="prediction":

    python -m rtrl_rl.agents.prediction --config=configs/rtu_trace_conditioning.py:cell=rtu_nonlinear \
        [--run_dir=runs/...] [--config.agent.steps=...]

Writes <run_dir>/config.json and <run_dir>/metrics.jsonl (one record per chunk: chunk_msre,
td_error_sq, steps_per_s; a final record: final_msre, final_msre_normalized, ...) and prints the
final MSRE.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config (configs/*.py[:arg])",
                                          lock_config=True)
_RUN_DIR = flags.DEFINE_string("run_dir", None, "run directory (default runs/<name>_seed<seed>)")


def main(argv) -> int:
  del argv
  from rtrl_rl.agents.prediction import config as config_lib  # pylint: disable=g-import-not-at-top
  from rtrl_rl.agents.prediction import learning  # pylint: disable=g-import-not-at-top
  from rtrl_rl.io import MetricsWriter  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  if config is None:
    print("error: --config is required, e.g. --config=configs/rtu_trace_conditioning.py", file=sys.stderr)
    return 2
  try:
    config_lib.validate_experiment(config)
  except config_lib.PredictionConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  run_dir = _RUN_DIR.value or os.path.join("runs", f"{config.name}_seed{config.seed}")
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=2))
  with MetricsWriter(run_dir) as writer:
    summary = learning.run_experiment(config, writer=writer, log=print)
  print(f"final MSRE {summary['msre']:.5f} (normalized by predicting 0: {summary['msre_normalized']:.4f}; "
        f"last {config.agent.msre_window} steps, {summary['num_seeds']} seed(s), {summary['wall_s']:.1f}s) "
        f"-> {run_dir}")
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
