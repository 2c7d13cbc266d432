#!/usr/bin/env bash
# The test command (README "Running the tests"; .ci/run runs exactly this).
# Finds ComfyUI, prepares a cached virtual environment outside the repository with
# ComfyUI's requirements and ours, then runs the unit tier and the host tier
# (a real ComfyUI server on 127.0.0.1). Extra arguments go to pytest; --setup-only stops
# after preparing the environment (what `python -m wanfit demo` needs).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
comfyui="${COMFYUI_PATH:-$HOME/ComfyUI}"

if [[ ! -f "$comfyui/main.py" || ! -d "$comfyui/comfy" ]]; then
  cat >&2 <<MSG
error: no ComfyUI checkout found at ${comfyui}
  (looked at \$COMFYUI_PATH, else ~/ComfyUI). The host tests run a real ComfyUI server.
Fix: get ComfyUI (v0.3.64 or newer) and point COMFYUI_PATH at it, e.g.
    git clone https://github.com/comfyanonymous/ComfyUI ~/ComfyUI
  or, where only a stored snapshot is reachable, check out the snapshot without the
  one file it lacks (llama_tokenizer/tokenizer.json, unused by WAN):
    git clone --no-checkout <snapshot> ~/ComfyUI && cd ~/ComfyUI &&
    git ls-files -z | grep -zv llama_tokenizer/tokenizer.json | xargs -0 git checkout HEAD --
Then run this command again: bash tests/run.sh
MSG
  exit 3
fi

venv="${WANFIT_VENV:-$HOME/.cache/wanfit/venv}"
python="$venv/bin/python"
base_python="${WANFIT_BASE_PYTHON:-python3}"

# torch: CPU-capable builds that pip takes from this machine's disk (see README).
case "$(uname -m)" in
  aarch64|arm64) torch_spec="${WANFIT_TORCH_SPEC:-torch==2.9.1 torchvision==0.24.1}" ;;
  *) torch_spec="${WANFIT_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}" ;;
esac

if [[ ! -x "$python" ]]; then
  echo "creating virtual environment $venv"
  "$base_python" -m venv "$venv"
fi

# Reinstall only when an input changed: ComfyUI's requirements, ours, the torch spec.
stamp_file="$venv/.wanfit-requirements.sha256"
stamp="$(cat "$comfyui/requirements.txt" "$repo_root/requirements.txt" "$repo_root/tests/requirements.txt" <(echo "$torch_spec") | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]]; then
  echo "installing test requirements into $venv (log: $venv/.wanfit-install.log)"
  install_log="$venv/.wanfit-install.log"
  : > "$install_log"
  pip_install() {
    if ! "$python" -m pip install -q "$@" >> "$install_log" 2>&1; then
      tail -n 40 "$install_log" >&2
      echo "error: pip install $* failed (full log: $install_log)" >&2
      exit 4
    fi
  }
  if ! "$python" -c "import torch, torchvision" 2>/dev/null; then
    # shellcheck disable=SC2086
    pip_install $torch_spec
  fi
  comfy_requirements="$(mktemp)"
  # torch is installed above; torchaudio has no build for that torch and only ComfyUI's audio nodes need it.
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$comfyui/requirements.txt" > "$comfy_requirements"
  pip_install -r "$comfy_requirements" -r "$repo_root/requirements.txt" -r "$repo_root/tests/requirements.txt"
  rm -f "$comfy_requirements"
  echo "$stamp" > "$stamp_file"
fi

if [[ "${1:-}" == "--setup-only" ]]; then
  echo "ready: $python (run the demo with: $python -m wanfit demo)"
  exit 0
fi

cd "$repo_root"
export COMFYUI_PATH="$comfyui"
exec "$python" -m pytest tests/unit tests/host "$@"
