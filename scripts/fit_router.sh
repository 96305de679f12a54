#!/usr/bin/env bash
# Refit the router's shipped competence table (mmagent/routing/default.json) for the offline
# defaults: every route answers the same fitting items (none the scene VLM trained on; the
# held-out comparison in docs/benchmarks.md uses another seed), then `mmagent route fit`.
#
#   bash scripts/fit_router.sh [RUNS_DIR]      # default runs/; about 20 minutes on 2 CPU cores
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
mm=.venv/bin/mmagent
routes=tools,adapter,hybrid
$mm eval --suite scenes-vqa  --pipelines $routes --limit 140 --seed 0 --batch-size 8 --out "$runs/fit-scenes"
$mm eval --suite ocr         --pipelines $routes --limit 40  --batch-size 8 --out "$runs/fit-ocr"
$mm eval --suite extraction  --pipelines $routes --limit 16  --batch-size 8 --out "$runs/fit-extraction"
$mm eval --suite receipts-qa --pipelines $routes --limit 32  --batch-size 8 --out "$runs/fit-receipts"
$mm route fit --from "$runs/fit-scenes" --from "$runs/fit-ocr" --from "$runs/fit-extraction" \
    --from "$runs/fit-receipts" --out mmagent/routing/default.json
