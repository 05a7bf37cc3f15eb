#!/usr/bin/env bash
# Fill perf/gpu_wheels/ (git-ignored) with the wheels the GPU machine lacks or holds in another version, for its
# python3 (CPython 3.12, x86_64 Linux), so that perf/gpu_check.sh can install them there with no network.
# The machine's own torch (CUDA build), accelerate, tokenizers, huggingface_hub, safetensors, pyarrow, ... are used.
#
#   bash perf/fetch_gpu_wheels.sh     # here, where PyPI is reachable; then carry perf/gpu_wheels
#
# Why each wheel: transformers is pinned (the machine has 5.17); bitsandbytes is the version the CPU tests ran (the
# machine has none; its one wheel holds every CUDA build, cuda130 included); peft is pinned; regex because
# transformers 5.18 checks regex>=2025.10.22 at import; datasets with dill and multiprocess for the miner's Arrow
# export (the machine has no datasets). Everything that travels must stay under the device tool's 64 MiB.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEST=perf/gpu_wheels
PY=${PYTHON:-python3}
WHEELS=(transformers==5.18.0 bitsandbytes==0.50.2 peft==0.21.2 regex==2026.11.19 datasets==5.2.0 dill==0.4.1
  multiprocess==0.70.19)
LIMIT_MIB=64

mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two versions of a package stop the offline install
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DEST" "${WHEELS[@]}"

wheels_b=$(cat "$DEST"/*.whl | wc -c)
tracked_b=$(git ls-files -z | xargs -0 cat 2>/dev/null | wc -c)
total_mib=$(((wheels_b + tracked_b) / 1048576))
ls -l "$DEST"
echo "wheels $((wheels_b / 1048576)) MiB + tracked files $((tracked_b / 1048576)) MiB = ${total_mib} MiB" \
  "(device carry limit ${LIMIT_MIB} MiB)"
if [ "$total_mib" -ge "$LIMIT_MIB" ]; then
  echo "error: $DEST plus the working tree exceed the ${LIMIT_MIB} MiB the device tool carries" >&2
  exit 1
fi
