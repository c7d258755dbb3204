#!/usr/bin/env bash
# docs/status-page/make-screenshots.sh: regenerates the screenshots of docs/status-page.md. It runs
# spec/02-integration/status_page_spec.lua (serve on the fixture data, headless Chromium), which
# saves them under .dp/test-output/status-page/, and copies them here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash spec/run.sh spec/02-integration/status_page_spec.lua
cp .dp/test-output/status-page/{overview,overview-phone,system,run,lineage,signin}.png docs/status-page/
echo "screenshots copied to docs/status-page/"
