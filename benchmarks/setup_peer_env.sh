#!/usr/bin/env bash
# Create (or update) the isolated "peer" environment used by the benchmarks.
#
# The peer environment holds the packages our library is compared against:
# the original GPL-licensed ``spectralign==0.2.0`` from PyPI,
# scikit-image, and m2stitch (MIST's method) for the end-to-end benchmark.  They are only ever imported from this separate virtual
# environment (see ``peer_worker.py``); none of their code is part of this
# repository.
#
# Usage: bash benchmarks/setup_peer_env.sh        (safe to run repeatedly)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENV_DIR="$HERE/.peer-env"
PACKAGES=(opencv-python-headless scikit-image numpy scipy m2stitch tifffile)
# spectralign 0.2.0 declares a dependency on the GUI build "opencv-python";
# it is installed without dependencies so that the headless build is the
# only provider of the cv2 module (two OpenCV wheels in one environment
# overwrite each other's files).
ORIGINAL=spectralign==0.2.0

find_python312() {
    local cand
    if command -v pyenv >/dev/null 2>&1; then
        for cand in "$(pyenv root)"/versions/3.12*/bin/python; do
            [ -x "$cand" ] && { echo "$cand"; return 0; }
        done
    fi
    for cand in /root/.pyenv/versions/3.12*/bin/python; do
        [ -x "$cand" ] && { echo "$cand"; return 0; }
    done
    # python3.12 on PATH (may be a shim: ask it for the real executable)
    python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null
}

if [ ! -x "$ENV_DIR/bin/python" ]; then
    if ! PY=$(find_python312); then
        echo "error: no Python 3.12 interpreter found (looked in \$(pyenv root)/versions/3.12*," \
             "/root/.pyenv/versions/3.12* and for python3.12 on PATH)." >&2
        echo "Install Python 3.12 (e.g. 'pyenv install 3.12') and re-run this script." >&2
        exit 1
    fi
    echo "Creating peer environment in $ENV_DIR with $PY"
    "$PY" -m venv "$ENV_DIR"
fi

"$ENV_DIR/bin/python" -m pip install --quiet --upgrade pip
"$ENV_DIR/bin/python" -m pip install --quiet "${PACKAGES[@]}"
"$ENV_DIR/bin/python" -m pip install --quiet --no-deps "$ORIGINAL"
"$ENV_DIR/bin/python" - <<'PY'
import importlib.metadata as md
import cv2, m2stitch, numpy, scipy, skimage, spectralign  # noqa: F401  (import check)
for name in ("spectralign", "scikit-image", "opencv-python-headless", "numpy", "scipy", "m2stitch"):
    print(f"{name}=={md.version(name)}")
PY
echo "Peer environment ready: $ENV_DIR/bin/python"
