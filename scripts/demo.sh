#!/usr/bin/env bash
# The main job on the offline defaults: a spoken question about a document image, which the router
# (`--pipeline auto`, the default) sends to the tool chain (Whisper base → PP-OCR → SmolLM2-135M),
# every step shown; a scene question, which it sends to the adapter route; then the tool chain, the
# adapter route and the router compared on the same held-out scene questions (mmagent eval).
set -euo pipefail
cd "$(dirname "$0")/.."
mm=.venv/bin/mmagent
echo "== preparing the offline model zoo (first run only: converts and dequantizes weights)"
$mm models prepare
echo
echo "== mmagent run --audio examples/media/question.wav --image examples/media/receipt.png -v"
$mm run --audio examples/media/question.wav --image examples/media/receipt.png -v
echo
echo "== a scene question: the router sends it to mmagent's own scene-world VLM (the adapter route)"
scene_dir=$(mktemp -d)
$mm scenes --n 1 --seed 2026 --out "$scene_dir/scenes" >/dev/null
$mm run --image "$scene_dir/scenes/images/000000.png" "How many shapes are there?" -v
rm -rf "$scene_dir"
echo
echo "== mmagent eval: the tool chain, the adapter route and the router on the same held-out scene questions"
eval_dir=${MMAGENT_DEMO_EVAL:-mmagent-eval/demo-scenes}
rm -rf "$eval_dir"
$mm eval --suite scenes-vqa --pipelines tools,adapter,auto --limit "${MMAGENT_DEMO_ITEMS:-28}" --batch-size 8 \
    --out "$eval_dir"
