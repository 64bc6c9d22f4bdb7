#!/usr/bin/env bash
# Add DeepSpeed to the active CI venv so the ZeRO-2/3 tests (tests/test_sharded.py,
# tests/test_vllm_server.py) run instead of skipping. On a machine without GPUs DeepSpeed uses its
# CPU accelerator with gloo; its one compiled op (the shared-memory comm op) is built on first use
# with the system C++ compiler (ninja comes with DeepSpeed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}"
PY="${PY:-.venv/bin/python}"
# torch pinned in the same command (keeps the CPU wheel); no build isolation, or pip would fetch a
# second (CUDA) torch just to build DeepSpeed's sdist; DS_BUILD_OPS=0: ops compile lazily, when used
DS_BUILD_OPS=0 "$PY" -m pip install -q --no-build-isolation torch==2.13.0 'deepspeed==0.19.8'
"$PY" -c "import deepspeed; print('deepspeed', deepspeed.__version__)"
