#!/usr/bin/env bash
# The wheels the lent GPU machine lacks, downloaded here for benchmarks/gpu_check.sh to carry there.
#
# That machine (see the device notes: Python 3.12, no network) has PyTorch with CUDA, transformers, accelerate,
# peft, matplotlib, scikit-learn, tensorboard, rich, pyyaml, pyarrow, requests and pytest, but not tyro (and its
# docstring-parser and typeguard), rapidfuzz or vaderSentiment. Versions are this project's venv's (tested
# together); extra requirements can be added as arguments (e.g. gguf for a GGUF model).
#   bash benchmarks/gpu_wheels.sh [NAME==VERSION ...]   -> benchmarks/gpu_wheels/*.whl (ignored by git)
# Then the device run carries the folder: carry ["benchmarks/gpu_wheels"], command `bash benchmarks/gpu_check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=benchmarks/gpu_wheels
PY="${PYTHON:-python3}"
PYVER="${PYVER:-3.12}"  # the GPU machine's Python
mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DEST" \
  tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 rapidfuzz==3.14.6 vaderSentiment==3.3.2 "$@"
ls -l "$DEST"
du -sh "$DEST"
