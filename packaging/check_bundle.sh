#!/usr/bin/env bash
# Build the app bundle with PyInstaller and prove it starts: the bundled window opens
# offscreen in demo mode (scripted engine), says so, and closes by itself.
#   bash packaging/check_bundle.sh            # needs `pip install pyinstaller`
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build/bundle}
start=$(date +%s)
pyinstaller packaging/xgblora-studio.spec --noconfirm --log-level WARN \
    --distpath "$build/dist" --workpath "$build/work"
built=$(date +%s)
app="$build/dist/xgblora-studio/xgblora-studio"
out=$(QT_QPA_PLATFORM=offscreen XDG_CONFIG_HOME="$(mktemp -d)" timeout 60 "$app" --demo --quit-after 3 2>&1)
echo "$out" | grep -q "xgblora-studio: window shown" || { echo "bundle did not start:"; echo "$out"; exit 1; }
echo "bundle OK: built in $((built - start)) s, $(du -sh "$build/dist/xgblora-studio" | cut -f1), starts and closes"
