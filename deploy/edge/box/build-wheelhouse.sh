#!/usr/bin/env bash
# Build the wheels an edge box installs from (boxes often have no internet):
#   deploy/edge/box/build-wheelhouse.sh DIR [PROJECT]   (PROJECT: this checkout by default)
# Run it on a machine of the boxes' kind (same CPU architecture and Python version).
set -euo pipefail
out=${1:?usage: build-wheelhouse.sh DIR [PROJECT]}
project=${2:-$(cd "$(dirname "$0")/../../.." && pwd)}
py=${PYTHON:-python3}
mkdir -p "$out"
"$py" -m pip wheel -q --wheel-dir "$out" "$project[edge]"
echo "wheelhouse: $(ls "$out" | wc -l) wheels in $out"
