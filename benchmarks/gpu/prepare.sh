#!/usr/bin/env bash
# Fetch, on a machine with the package index, the wheels that the GPU machine's image lacks (it has torch,
# transformers, accelerate, peft, pyarrow; no network). They land in .whl/ at the repo root, which
# check.sh installs from. vLLM's wheel is far over what travels to that machine, so vLLM is measured
# there only where the image already has it.
#   bash benchmarks/gpu/prepare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for pkg in trl==1.16.0 datasets==5.2.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
           typing-inspection==0.4.5 dill==0.4.1 multiprocess==0.70.19; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLAT[@]}" -d .whl "$pkg"
done
du -sh .whl
