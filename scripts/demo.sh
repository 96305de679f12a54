#!/usr/bin/env bash
# The main job on the offline defaults. For now (the spine): the installed plugins and backends,
# and the bundled example media run through the input-hardening layer.
set -euo pipefail
cd "$(dirname "$0")/.."
mm=.venv/bin/mmagent
echo "== mmagent plugins"; $mm plugins
echo; echo "== mmagent backends"; $mm backends
echo; echo "== mmagent inspect examples/media/*"; $mm inspect examples/media/*
echo; echo "== a hostile input is refused with one line (exit 2):"
$mm inspect "file:///etc/passwd" || echo "(exit $?)"
