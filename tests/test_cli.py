"""A user's mistake on any command line (train, prediction, evaluate, plot, launch.sweep, launch.status,
envs) ends with one `error:` message naming the problem and the fix and exit code 2, without a
traceback (the checks run before any training or evaluation); `--verbose` shows the traceback, and a
genuine bug keeps it."""

import concurrent.futures
import os
import subprocess
import sys

import pytest

from rtrl_rl import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _make_tmp(d):
  """A file, an empty directory, a run directory without checkpoints, and user files that raise."""
  d.mkdir()
  (d / "afile").write_text("not a directory\n")
  (d / "empty").mkdir()
  (d / "run").mkdir()
  (d / "run" / "config.json").write_text("{}")
  (d / "raising_config.py").write_text("def get_config():\n  raise RuntimeError('no GPU quota left')\n")
  (d / "raising_sweep.py").write_text("import no_such_module_here\n")
  (d / "sweep.py").write_text("def get_sweep():\n  return [{'name': 'a', 'config': 'configs/default.py'}]\n")
  return str(d)


# Root writes anywhere: to see permission bits a child run as root first drops the capability to
# override them (CAP_DAC_OVERRIDE, from its bounding set), then execs the command.
_DROP_DAC_OVERRIDE = (
  "import ctypes, os, sys; assert ctypes.CDLL(None).prctl(24, 1, 0, 0, 0) == 0; "
  "os.execv(sys.argv[1], sys.argv[1:])"
)  # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE


def run_cli(module, *args, env=None, honour_permissions=False):
  """`python -m <module> <args>` in the repository root (honour_permissions: as root too)."""
  cmd = [sys.executable, "-m", module, *args]
  if honour_permissions and os.geteuid() == 0:
    cmd = [sys.executable, "-c", _DROP_DAC_OVERRIDE, *cmd]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def _assert_message(out, *words):
  """Exit code 2, no traceback, and an `error:` message holding each of `words`."""
  text = out.stdout + out.stderr
  assert out.returncode == 2, text
  assert "Traceback" not in text, text
  assert "error: " in out.stderr, text
  for w in words:
    assert w in out.stderr, (w, text)


CASES = [  # (module, args, words of the message: the problem and the fix)
  (
    "rtrl_rl.train",
    ["--config=configs/missing.py"],
    ["--config=configs/missing.py", "No such file", "Pass an existing config file"],
  ),
  (
    "rtrl_rl.train",
    ["--config=configs/missing.py", "--config.seed=1"],
    ["--config=configs/missing.py", "No such file"],
  ),
  (
    "rtrl_rl.train",
    ["--config=configs/default.py:badvariant"],
    ["unknown variant 'badvariant'", "expected elstm, rtu, lru or ff"],
  ),
  (
    "rtrl_rl.train",
    ["--config={tmp}/raising_config.py"],
    ["raising_config.py", "RuntimeError: no GPU quota left", "Fix the config file"],
  ),
  (  # an old field name of the config vocabulary names the new one
    "rtrl_rl.train",
    ["--config=configs/rtu_popgym.py", "--config.agent.ent_coef=0.01"],
    ["agent.ent_coef was renamed", "use agent.entropy_cost"],
  ),
  (
    "rtrl_rl.train",
    ["--config=configs/rtu_trace_conditioning.py", "--config.agent.gamma=0.9"],
    ["agent.gamma was renamed", "use agent.discount"],
  ),
  (  # the network is agent.network in every algorithm (IMPALA's names)
    "rtrl_rl.train",
    ["--config=configs/rtu_popgym.py", "--config.agent.torso_sizes=(32,)"],
    ["agent.torso_sizes was renamed", "use agent.network.mlp_hidden_sizes"],
  ),
  (
    "rtrl_rl.train",
    ["--config=configs/rtu_popgym.py", "--config.agent.cell_options.nonlinear=False"],
    ["agent.cell_options.nonlinear was renamed", "use agent.network.cell_options.nonlinear"],
  ),
  (
    "rtrl_rl.train",
    ["--config=configs/rtu_trace_conditioning.py", "--config.agent.steps=100"],
    ["agent.steps was renamed", "use agent.total_env_steps"],
  ),
  (
    "rtrl_rl.train",
    ["--config=configs/rtu_trace_conditioning.py", "--config.agent.mode=tbptt"],
    ["agent.mode was renamed", "use agent.network.core_mode"],
  ),
  (  # an agent's config error: every problem, one message
    "rtrl_rl.train",
    [
      "--config=configs/rtu_popgym.py",
      "--config.agent.network.core_mode=bptt",
      "--config.agent.num_epochs=0",
      "--run_dir={tmp}/empty/ppo",
    ],
    ["invalid PPO config", "network.core_mode='bptt'", "num_epochs must be an int >= 1"],
  ),
  (
    "rtrl_rl.train",
    [
      "--config=configs/rtu_trace_conditioning.py",
      "--config.agent.network.core_mode=rtlr",
      "--config.agent.chunk_steps=0",
      "--run_dir={tmp}/empty/p2",
    ],
    ["invalid experiment config", "agent.network.core_mode='rtlr'", "agent.chunk_steps=0"],
  ),
  (
    "rtrl_rl.train",
    ["--config=configs/default.py", "--config.sed=1"],
    ["'sed'", "field names of the --config.<field> overrides"],
  ),
  ("rtrl_rl.train", ["--config=configs/default.py", "--bogus"], ["bogus", "--helpfull"]),
  ("rtrl_rl.train", [], ["--config is required", "--config=configs/default.py"]),
  (
    "rtrl_rl.train",
    ["--config=configs/default.py", "--run_dir={tmp}/afile"],
    ["{tmp}/afile is a file", "--run_dir"],
  ),
  (
    "rtrl_rl.train",
    ["--config=configs/default.py", "--run_dir={tmp}/afile/run"],
    ["lies under {tmp}/afile", "--run_dir"],
  ),
  ("rtrl_rl.train", ["--config=configs/missing.py"], ["No such file"]),
  (
    "rtrl_rl.train",
    ["--config=configs/rtu_trace_conditioning.py", "--run_dir={tmp}/afile"],
    ["is a file", "--run_dir"],
  ),
  ("rtrl_rl.evaluate", [], ["--run_dir is required"]),
  ("rtrl_rl.evaluate", ["--run_dir={tmp}/missing"], ["not a run directory", "--run_dir"]),
  ("rtrl_rl.evaluate", ["--run_dir={tmp}/run"], ["no checkpoint", "--run_dir"]),
  ("rtrl_rl.evaluate", ["--run_dir={tmp}/run", "--out={tmp}/empty"], ["is a directory", "--out"]),
  ("rtrl_rl.evaluate", ["--run_dir={tmp}/run", "--env_options=oops"], ["--env_options", "key=value"]),
  ("rtrl_rl.plot", ["--runs={tmp}/empty"], ["no run directory", "metrics.jsonl", "--runs"]),
  ("rtrl_rl.plot", ["--runs={tmp}/missing"], ["{tmp}/missing is not a directory", "--runs"]),
  ("rtrl_rl.plot", ["--runs={tmp}/empty", "--out={tmp}/afile/c.png"], ["lies under", "--out"]),
  ("rtrl_rl.plot", ["--runs={tmp}/empty", "--out={tmp}/c.txt"], [".txt", ".png"]),
  ("launch.sweep", ["--sweep={tmp}/missing.py"], ["no such file", "launch/sweeps/"]),
  ("launch.sweep", ["--sweep=README.md", "--dry_run"], ["not a Python file", "launch/sweeps/"]),
  (
    "launch.sweep",
    ["--sweep={tmp}/raising_sweep.py", "--dry_run"],
    ["ModuleNotFoundError", "no_such_module_here", "--verbose"],
  ),
  (
    "launch.sweep",
    ["--sweep={tmp}/sweep.py", "--root={tmp}/afile", "--devices=cpu"],
    ["lies under {tmp}/afile", "--root"],
  ),
  (
    "launch.sweep",
    ["--sweep={tmp}/sweep.py", "--root={tmp}/sweeps", "--backend=slurm"],
    ["sbatch", "--backend=local"],
  ),
  ("launch.status", ["--root={tmp}/missing"], ["no such directory", "sweep directory"]),
  ("launch.status", ["--root={tmp}/empty"], ["no run directories", "sweep directory"]),
  ("rtrl_rl.envs", ["--list", "nope"], ["unknown family 'nope'", "memory"]),
]


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory):
  """Every case's command, run in its own copy of the directory `_make_tmp` makes, a few at a time (each
  is a Python start-up on one core): {case index: (the directory, its tree before, the result, its tree
  after)}."""
  env = dict(os.environ, PATH="/nonexistent")  # no sbatch / srun, whatever the host has
  root = tmp_path_factory.mktemp("cli")

  def run(i):
    module, args, _ = CASES[i]
    tmp = _make_tmp(root / str(i))
    before = _tree(tmp)
    out = run_cli(module, *(a.format(tmp=tmp) for a in args), env=env)
    return tmp, before, out, _tree(tmp)

  with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
    return dict(enumerate(pool.map(run, range(len(CASES)))))


@pytest.mark.parametrize(
  "case", range(len(CASES)), ids=[f"{m.split('.')[-1]}:{' '.join(a)}" for m, a, _ in CASES]
)
def test_user_mistake_is_one_message(mistakes, case):
  tmp, before, out, after = mistakes[case]
  _assert_message(out, *(w.format(tmp=tmp) for w in CASES[case][2]))
  assert after == before  # a refused command creates nothing


def _tree(path):
  return sorted(os.path.join(d, n) for d, dirs, files in os.walk(path) for n in dirs + files)


@pytest.fixture
def read_only_dir(tmp_path):
  """A run directory (config.json, no checkpoint) with mode 0o555."""
  d = tmp_path / "ro"
  d.mkdir()
  (d / "config.json").write_text("{}")
  d.chmod(0o555)
  yield str(d)
  d.chmod(0o755)


def test_read_only_run_dir_is_refused_before_training(read_only_dir):
  out = run_cli(
    "rtrl_rl.train", "--config=configs/default.py", f"--run_dir={read_only_dir}", honour_permissions=True
  )
  _assert_message(out, f"cannot write {read_only_dir}", "read-only", "--run_dir")
  out = run_cli(
    "rtrl_rl.train",
    "--config=configs/default.py",
    f"--run_dir={read_only_dir}/sub/run",
    honour_permissions=True,
  )
  _assert_message(out, f"{read_only_dir} is read-only", "--run_dir")
  assert os.listdir(read_only_dir) == ["config.json"]


def test_evaluate_on_a_read_only_run_dir_names_out(read_only_dir):
  out = run_cli("rtrl_rl.evaluate", f"--run_dir={read_only_dir}", honour_permissions=True)
  _assert_message(out, f"cannot write {read_only_dir}/eval.json", "read-only", "--out")


@pytest.mark.parametrize(
  "module,args",
  [
    ("rtrl_rl.train", ["--config=configs/missing.py"]),
    ("launch.status", ["--root=/nonexistent/sweep"]),
  ],
)
def test_verbose_shows_the_traceback(module, args):
  out = run_cli(module, *args, "--verbose")
  assert out.returncode == 2, out.stderr
  assert "Traceback (most recent call last)" in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith("error: ")


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
  monkeypatch.setattr(sys, "argv", ["tool"])

  def buggy(argv):
    raise ZeroDivisionError("a bug")

  with pytest.raises(ZeroDivisionError):
    cli.run(buggy)

  def mistaken(argv):
    raise cli.UsageError("what is wrong; how to fix it")

  with pytest.raises(SystemExit) as exit_:
    cli.run(mistaken)
  assert exit_.value.code == 2
  assert capsys.readouterr().err == "error: what is wrong; how to fix it\n"


def test_a_job_array_that_sbatch_refuses_is_one_message(tmp_path):
  """A fake `sbatch` that refuses as SLURM does (a partition the cluster does not have)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "sbatch").write_text(
    "#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpux' >&2\n"
    "echo 'sbatch: error: Batch job submission failed: Invalid partition "
    "name specified' >&2\nexit 1\n"
  )
  (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  out = run_cli(
    "launch.sweep",
    "--sweep=launch/sweeps/default.py",
    "--backend=slurm",
    f"--root={tmp_path}/root",
    "--partition=gpux",
    env=env,
  )
  _assert_message(out, "sbatch refused the job array", "invalid partition specified: gpux", "--partition")
