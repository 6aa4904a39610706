#!/usr/bin/env bash
# One-time set-up on a fresh machine: system packages (when root), a virtual
# environment in .venv, and the project with its test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# pulseaudio, pulseaudio-utils, libasound2-plugins: a private null-sink sound server so the
# speaker sink is tested on a real PortAudio device without a sound card (tests/stream/audio_server.py)
APT_PACKAGES=(ffmpeg libportaudio2 chromium firefox-esr pulseaudio pulseaudio-utils libasound2-plugins)
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
echo "[setup] installing frieren-stream (editable, with test extras)"
.venv/bin/pip install -q -e ".[test]" 2>&1 | grep -v -E "^WARNING: Location|is ignored" || true
.venv/bin/python -c "import torch, torchaudio; print('[setup] torch', torch.__version__, 'torchaudio', torchaudio.__version__)"
