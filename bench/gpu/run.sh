#!/usr/bin/env bash
# The GPU kit: every GPU measurement the open issues ask for, in one device call of ~8 minutes.
#
# Before (here, with network):   bash bench/gpu/fetch_wheels.sh      # -> .whl/ (~10 MiB, ignored by git)
# The device call (one):
#   run(command="bash bench/gpu/run.sh", carry=[".whl"], timeout_s=560)
# Outputs come back from $OUT (6 files): env.txt (nvidia-smi, jax.devices(), package versions),
# cells.txt (python -m bench.bench_cells), learner.txt (python -m bench.bench_learner),
# system.txt (python -m bench.bench_system --gpu --systems=pong: Pong, RTRL eLSTM N=256, end to
# end with the actors' policy on the CPUs and on the GPU, next to raw envpool and learner-only),
# system_ff.txt (the same for the feed-forward agent, GPU actors only), summary.txt (each step's
# exit code, time and limit). Each step runs under `timeout` with a cap, and all together under a
# deadline (GPU_KIT_TOTAL_S, default 500 s from the start), so one slow step cannot eat the
# budget (the later steps get what is left; a step with < 20 s left is skipped); cells and system
# print their rows as they go, so a step cut short still leaves its finished rows. Steps that were
# cut or skipped can be rerun alone, e.g. `bash bench/gpu/run.sh system-ff` (~2 min).
#
#   bash bench/gpu/run.sh [STEP...]       # steps: env cells learner system system-ff (default: all)
#   bash bench/gpu/run.sh --smoke [STEP...]   # here, on CPU: .venv's python, no wheel install,
#                                         # tiny sizes, outputs in $OUT or /tmp/gpu_kit_smoke
#
# Environment: GPU_KIT_TOTAL_S (deadline, s), GPU_KIT_MACHINE_FLAX=1 (keep the machine's own
# flax/optax/chex/orbax-checkpoint instead of the carried pins), PYTHON (interpreter; default
# python3 there, .venv/bin/python with --smoke).
# JAX_PLATFORMS must stay unset: the trainer picks the GPU and gives each actor process its own
# placement (system.actor_device). bench_system allocates GPU memory on demand in its own process
# (its learner-only ceiling shares the GPU with the trainer it starts); the system step uses a
# persistent compilation cache (/tmp/gpu_kit_jax_cache) so repeated trainer starts of one system
# (CPU actors, then GPU actors) compile the learner once.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$(date +%s)

SMOKE=0
STEPS=()
for a in "$@"; do
  case "$a" in
    --smoke) SMOKE=1 ;;
    env|cells|learner|system|system-ff) STEPS+=("$a") ;;
    *) echo "usage: bash bench/gpu/run.sh [--smoke] [env] [cells] [learner] [system] [system-ff]" >&2; exit 2 ;;
  esac
done
[ ${#STEPS[@]} -eq 0 ] && STEPS=(env cells learner system system-ff)

if [ "$SMOKE" = 1 ]; then
  PY=${PYTHON:-.venv/bin/python}
  OUTDIR=${OUT:-/tmp/gpu_kit_smoke}
  TOTAL=${GPU_KIT_TOTAL_S:-1500}
else
  PY=${PYTHON:-python3}
  OUTDIR=${OUT:?'$OUT is unset: run this through the device tool (or use --smoke here)'}
  TOTAL=${GPU_KIT_TOTAL_S:-500}
fi
mkdir -p "$OUTDIR"
rm -f "$OUTDIR"/{env,cells,learner,system,system_ff,summary}.txt
export PYTHONUNBUFFERED=1
unset JAX_PLATFORMS

if [ "$SMOKE" = 0 ]; then
  wheels=(.whl/*.whl)
  if [ "${GPU_KIT_MACHINE_FLAX:-0}" = 1 ]; then
    keep=(); for w in "${wheels[@]}"; do
      case "$(basename "$w")" in flax-*|optax-*|chex-*|orbax_checkpoint-*) ;; *) keep+=("$w") ;; esac
    done; wheels=("${keep[@]}")
  fi
  [ -e "${wheels[0]}" ] || { echo "no wheels in .whl/: run bash bench/gpu/fetch_wheels.sh here first and carry .whl" | tee "$OUTDIR/summary.txt"; exit 1; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "${wheels[@]}" 2>&1 | grep -v "^WARNING: Location" || true
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi

summary() { echo "$*" | tee -a "$OUTDIR/summary.txt"; }
summary "# GPU kit ($([ "$SMOKE" = 1 ] && echo smoke || echo device)) $(date -u +%FT%TZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), deadline ${TOTAL}s, steps: ${STEPS[*]}"
FAILED=0

# step NAME CAP_S CMD...: run CMD under timeout min(CAP_S, time left before the deadline), output
# to $OUTDIR/NAME.txt and to stdout; a step with less than 20 s left is skipped.
step() {
  local name=$1 cap=$2; shift 2
  local left=$(( TOTAL - ($(date +%s) - T0) ))
  local limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 20 ]; then
    summary "$name: SKIPPED (${left}s left before the deadline)"; FAILED=1; return
  fi
  echo "=== $name (limit ${limit}s): $*"
  local t=$(date +%s)
  { echo "# $*"; echo "# limit ${limit}s"; } > "$OUTDIR/$name.txt"
  timeout -k 15 "$limit" "$@" 2>&1 | tee -a "$OUTDIR/$name.txt"
  local rc=${PIPESTATUS[0]}
  local why=""; [ "$rc" = 124 ] || [ "$rc" = 137 ] && why=" (TIMED OUT: cut at the limit)"
  summary "$name: exit $rc after $(( $(date +%s) - t ))s of ${limit}s$why"
  [ "$rc" = 0 ] || FAILED=1
}

env_info() {
  echo "## uname / cpus / memory"; uname -a; nproc; free -g 2>/dev/null | head -2
  echo "## nvidia-smi"; nvidia-smi 2>&1 || echo "(no nvidia-smi)"
  echo "## python packages (the interpreter's own, then those carried into /tmp/site, which win)"
  env -u PYTHONPATH "$PY" -m pip list 2>/dev/null | grep -i -E "^(jax|jaxlib|jax-cuda13-plugin|jax-cuda13-pjrt|flax|optax|chex|orbax-checkpoint|numpy|scipy|tensorstore|protobuf|ml.dtypes|six|pyyaml|psutil) " || true
  if [ "$SMOKE" = 0 ] && [ -d /tmp/site ]; then "$PY" -m pip list --path /tmp/site 2>/dev/null | tail -n +3; fi
  echo "## jax"
  "$PY" - <<'EOF'
import time
t = time.perf_counter()
import jax, jax.numpy as jnp
print("jax", jax.__version__, "backend", jax.default_backend(), "devices", jax.devices())
x = jnp.ones((4096, 4096), jnp.float32)
(x @ x).block_until_ready()
print(f"first matmul done {time.perf_counter() - t:.1f}s after import")
import flax, optax, chex, orbax.checkpoint, envpool, gymnax, ml_collections, tensorboardX, submitit
print("flax", flax.__version__, flax.__file__)
print("optax", optax.__version__, "chex", chex.__version__, "envpool", envpool.__version__)
from rtrl_rl import envs
env = envs.make("atari/Pong", 2, 0)
print("atari/Pong", env.observation_space, env.action_space, env.reset().obs.shape)
EOF
}

export PY SMOKE
export -f env_info          # `timeout` runs programs, so the env step runs it as `bash -c env_info`

for s in "${STEPS[@]}"; do
  if [ "$SMOKE" = 1 ]; then
    case "$s" in
      env) step env 120 bash -c env_info ;;
      cells) step cells 300 "$PY" -m bench.bench_cells --cells elstm,rtu-linear,rtu-nonlinear,lru \
               --batch 2 --hidden 8 --repeats 2 --stream ;;
      learner) step learner 300 "$PY" -m bench.bench_learner --variants feed-forward,rtrl-elstm \
                 --batch-size 2 --unroll-length 2 --hidden-size 16 --repeats 1 ;;
      # The GPU placement fails here (no GPU: the trainer exits 2 naming the fix), which the table
      # shows as NO END-TO-END RATE: that path is exercised too.
      system|system-ff)
        sysname=pong; devices=cpu,gpu; ceilings=()
        [ "$s" = system-ff ] && { sysname=pong-ff; devices=cpu; ceilings=(--no-ceilings); }
        JAX_COMPILATION_CACHE_DIR=/tmp/gpu_kit_jax_cache_smoke \
        step "${s/-/_}" 400 "$PY" -m bench.bench_system --gpu --systems "$sysname" ${ceilings[@]+"${ceilings[@]}"} \
          --actor-devices "$devices" --actors 1 --envs-per-actor 2 --batch-size 2 --unroll-length 4 \
          --pong-seconds 4 --pong-warmup 2 --startup-timeout 150 ;;
    esac
  else
    case "$s" in
      env) step env 40 bash -c env_info ;;
      # 16 configurations (4 cells x B {32, 256} x N {256, 512}), 5 jitted functions each: mostly
      # compile time (estimate 4-7 s per configuration).
      cells) step cells 110 "$PY" -m bench.bench_cells --repeats 5 --stream ;;
      # 4 AOT compiles of the Atari learner (M=50, B=32; estimate 15-25 s each), 10 rounds.
      learner) step learner 110 "$PY" -m bench.bench_learner --repeats 10 ;;
      # Pong, M=50, B=32, cpus-4 actors x 2 pools x 8 envs: the bench's own learner compile (~25 s),
      # the ceilings before and after (~25 s), one trainer run per actor placement (start-up
      # ~30-45 s, the learner compiled once thanks to the cache, + 5 s warm-up + 20 s window +
      # shutdown). RTRL eLSTM with the policy on the CPUs and on the GPU (CPUs only if this
      # trainer has no system.actor_device); then feed-forward with GPU actors (else CPU), end to
      # end only (~70 s; its learner-only ceiling at the same M and B is learner.txt's
      # feed-forward row, its raw env the same as Pong's).
      system|system-ff)
        gpu=cpu; grep -q "actor_device" rtrl_rl/experiment.py && gpu=gpu
        if [ "$s" = system ]; then sysname=pong; devices=cpu,$gpu; cap=200
        else sysname=pong-ff; devices=$gpu; cap=120; fi
        [ "$devices" = cpu,cpu ] && devices=cpu
        ceilings=(); [ "$s" = system-ff ] && ceilings=(--no-ceilings)   # ff learner-only: learner.txt
        JAX_COMPILATION_CACHE_DIR=/tmp/gpu_kit_jax_cache \
        step "${s/-/_}" "$cap" "$PY" -m bench.bench_system --gpu --systems "$sysname" ${ceilings[@]+"${ceilings[@]}"} \
          --actor-devices "$devices" --pong-seconds 20 --pong-warmup 5 --startup-timeout 75 ;;
    esac
  fi
done
summary "total $(( $(date +%s) - T0 ))s; outputs in $OUTDIR: $(cd "$OUTDIR" && ls | tr '\n' ' ')"
exit $FAILED
