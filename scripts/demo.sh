#!/usr/bin/env bash
# The main job on the embedded default model: no downloads, no camera.
# Streams the live synthetic Foley world through the engine for 20 s and writes
# the generated audio to out/demo.wav while publishing it on ZeroMQ.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
exec .venv/bin/frieren-stream --source synthetic --sink wav out/demo.wav --sink zmq --duration 20 "$@"
