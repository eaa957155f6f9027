#!/usr/bin/env bash
# Builds dist/limitline: one self-contained executable of the `limitline` command (PyInstaller
# --onefile), with the embedded default config, the bundled candles and every data file of the
# packages (supervisors/web's assets included). Needs the `binary` extra:
#
#     .venv/bin/pip install -e ".[binary]" && scripts/build-binary.sh
#
# PYTHON names the interpreter to build with (default .venv/bin/python). The executable runs
# on machines with the same OS and CPU architecture and a glibc at least as new as this one's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -m PyInstaller --onefile --name limitline --noconfirm --log-level WARN \
    --collect-data supervisors --collect-data exchange \
    --collect-submodules actors --collect-submodules supervisors --collect-submodules exchange \
    --collect-submodules store \
    --distpath dist --workpath build/pyinstaller --specpath build \
    scripts/limitline_entry.py
ls -l dist/limitline
