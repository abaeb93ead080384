#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels the GPU machine lacks into .whl/ for the GPU kit.
#
#     bash bench/gpu/fetch_wheels.sh          # then: device run with carry=[".whl"] (bench/gpu/run.sh)
#
# The GPU machine (nvidia-h200: Python 3.12, jax 0.11.2 + jax-cuda13-plugin, no network) has
# absl-py, numpy, scipy, matplotlib, psutil, pyyaml, protobuf, cloudpickle, tensorstore, ... (see
# the device tool's KINDS.md) but not these, which the code imports:
#   envpool 1.2.5 (+ envpool-assets 0.3.0, dm-env, dm-tree, optree, gymnasium, farama-notifications),
#   ml_collections, gymnax (+ six, which it imports undeclared; the machine lists six too), popgym,
#   tensorboardX, submitit.
# Also pinned here (the versions this repo's suite passed with under jax 0.11.2, see BUILD_NOTES
# "GPU kit"): flax, optax, chex, orbax-checkpoint. The machine has its own (unknown) versions;
# run.sh installs ours over them unless GPU_KIT_MACHINE_FLAX=1.
#
# envpool's wheel (50 MiB) and envpool-assets (60 MiB) do not fit the 64 MiB carry limit: they are
# rewritten (bench/gpu/slim_wheel.py) with only the Atari and classic-control engines and the Atari
# ROMs; every other family fails at envpool.make there. Total ~10 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
DEST=.whl
if ! git check-ignore -q "$DEST/" 2>/dev/null; then
  echo "/$DEST/" >> .git/info/exclude      # the device README's advice; .gitignore has it already
fi
rm -rf "$DEST" "$DEST.raw"
mkdir -p "$DEST" "$DEST.raw"
PLAT=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64
      --platform any)
WHEELS=(
  envpool==1.2.5 envpool-assets==0.3.0 dm-env==1.6 dm-tree==0.1.10 optree==0.20.0
  gymnasium==1.3.0 farama-notifications==0.0.6
  ml_collections==1.1.0 gymnax==1.0.1 six==1.17.0 popgym==1.0.7 tensorboardX==2.6.5 submitit==1.5.4
  flax==0.12.12 optax==0.2.8 chex==0.1.92 orbax-checkpoint==0.12.8
)
"$PY" -m pip download -q "${PLAT[@]}" -d "$DEST.raw" "${WHEELS[@]}"
for w in "$DEST.raw"/*.whl; do
  case "$(basename "$w")" in
    envpool-1.*)
      "$PY" bench/gpu/slim_wheel.py "$w" "$DEST" \
        --drop 'envpool/*.so' --drop 'envpool/*/*.so' --drop 'envpool/*/*/*.so' \
        --drop 'envpool/vizdoom/bin/*' --drop 'envpool/jumanji/assets/*' \
        --keep 'envpool/atari/*' --keep 'envpool/classic_control/*' \
        --tolerant-imports envpool/entry.py ;;
    envpool_assets-*)
      "$PY" bench/gpu/slim_wheel.py "$w" "$DEST" \
        --drop 'envpool_assets/*' --keep 'envpool_assets/__init__.py' --keep 'envpool_assets/atari/*' ;;
    *) cp "$w" "$DEST/" ;;
  esac
done
rm -rf "$DEST.raw"
n=$(ls "$DEST"/*.whl | wc -l)
if [ "$n" -ne "${#WHEELS[@]}" ]; then
  echo "expected ${#WHEELS[@]} wheels, got $n" >&2; exit 1
fi
ls -l "$DEST"/*.whl | awk '{printf "%8.2f MiB  %s\n", $5 / 1048576, $NF}'
du -cb "$DEST"/*.whl | tail -1 | awk '{printf "total %.1f MiB in %s\n", $1 / 1048576, "'"$DEST"'"}'
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "working tree (tracked files) $(awk "BEGIN {printf \"%.1f\", $tracked / 1048576}") MiB; the device tool's limit is 64 MiB for all that travels"
