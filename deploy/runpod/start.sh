#!/usr/bin/env bash
# The worker's entry point: WanFit's start step (launch flags for this GPU / GPU_TIER, the models of
# WANFIT_WORKFLOWS on the network volume, the volume's extra-model-paths file), which then replaces
# itself with worker-comfyui's own /start.sh carrying those flags. Any failure exits non-zero with
# the reason in the worker log, before ComfyUI starts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec python -u -m wanfit worker-start --handover "${WANFIT_HANDOVER:-/start.sh}"
