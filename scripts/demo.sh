#!/usr/bin/env bash
# The main job on the offline defaults: a spoken question about a document image, answered by the
# tool chain (Whisper base → PP-OCR → SmolLM2-135M-Instruct), every step shown.
set -euo pipefail
cd "$(dirname "$0")/.."
mm=.venv/bin/mmagent
echo "== preparing the offline model zoo (first run only: converts and dequantizes weights)"
$mm models prepare
echo
echo "== mmagent run --audio examples/media/question.wav --image examples/media/receipt.png -v"
$mm run --audio examples/media/question.wav --image examples/media/receipt.png -v
