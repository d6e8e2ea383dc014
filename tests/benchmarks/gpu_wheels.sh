#!/usr/bin/env bash
# Fetch, here, the wheels the lent GPU machine lacks (its Python is 3.12 with torch, numpy,
# pandas, matplotlib, seaborn, scipy, opencv; no COCO tools), into .whl/ (git-ignored).
# The lease script installs them with --no-deps. Papermill / fvcore / submitit stay here:
# the GPU script runs without notebooks and reads the committed GFLOPs.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLAT[@]}" -d .whl \
    pycocotools==2.0.11 faster-coco-eval==1.8.0 tidecv==1.0.1 appdirs==1.4.4
ls -la .whl
