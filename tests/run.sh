#!/usr/bin/env bash
# The test command (README "Running the tests"; .ci/run runs exactly this).
# Finds each supported ComfyUI core, prepares one cached virtual environment per core outside
# the repository (ComfyUI's requirements, the torch set that core needs, ours), then runs the
# unit tier once, and against every core the host tier (a real ComfyUI server on 127.0.0.1) and
# the browser tier (that server's own front end in headless Chromium: Debian's chromium package,
# installed here when missing, driven by Playwright; screenshots in artifacts/browser/<core>).
#
#   bash tests/run.sh                     # unit tier + host and browser tiers on 0.3.64 and on 0.33.0
#   bash tests/run.sh --core 0.33.0 -k plan   # one core; extra arguments go to pytest
#   bash tests/run.sh --setup-only        # prepare the environments and stop
#
# Core checkouts: $WANFIT_CORE_0_3_64 (default ~/ComfyUI-0.3.64) and $WANFIT_CORE_0_33_0
# (default ~/ComfyUI-0.33.0). Venvs: $WANFIT_VENV_ROOT/<version> (default ~/.cache/wanfit/venv).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
supported_cores=(0.3.64 0.33.0)   # oldest first; keep in step with wanfit/core.py

only_core=""
setup_only=0
pytest_args=()
while (($#)); do
  case "$1" in
    --core) only_core="${2:?--core needs a version: ${supported_cores[*]}}"; shift 2 ;;
    --setup-only) setup_only=1; shift ;;
    *) pytest_args+=("$1"); shift ;;
  esac
done

selected_cores=("${supported_cores[@]}")
if [[ -n "$only_core" ]]; then
  if [[ " ${supported_cores[*]} " != *" $only_core "* ]]; then
    echo "error: --core $only_core is not a supported core; supported: ${supported_cores[*]}" >&2
    exit 2
  fi
  selected_cores=("$only_core")
fi

core_path() {  # version -> checkout path
  local var="WANFIT_CORE_${1//./_}"
  echo "${!var:-$HOME/ComfyUI-$1}"
}

core_version_of() {  # checkout path -> its comfyui_version.py version, or nothing
  sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$1/comfyui_version.py" 2>/dev/null || true
}

missing=()
for version in "${selected_cores[@]}"; do
  path="$(core_path "$version")"
  if [[ ! -f "$path/main.py" || ! -d "$path/comfy" ]]; then
    missing+=("$version")
  elif [[ "$(core_version_of "$path")" != "$version" ]]; then
    echo "error: $path holds ComfyUI $(core_version_of "$path"), not $version" >&2
    echo "Fix: check out ComfyUI $version there, or set WANFIT_CORE_${version//./_} to a checkout of it." >&2
    exit 3
  fi
done
if ((${#missing[@]})); then
  {
    for version in "${missing[@]}"; do
      echo "error: no ComfyUI $version checkout found at $(core_path "$version")"
    done
    cat <<MSG
  The host tests run a real ComfyUI server on each supported core (${supported_cores[*]}).
  Each core is looked for at \$WANFIT_CORE_<version with _> (e.g. WANFIT_CORE_0_33_0), else ~/ComfyUI-<version>.
Fix: check out each missing core, then run this command again (bash tests/run.sh):
    git clone https://github.com/comfyanonymous/ComfyUI ~/ComfyUI-0.3.64 && git -C ~/ComfyUI-0.3.64 checkout v0.3.64
    git clone https://github.com/comfyanonymous/ComfyUI ~/ComfyUI-0.33.0 && git -C ~/ComfyUI-0.33.0 checkout v0.33.0
  Where only a stored snapshot is reachable, check it out without the files it lacks (unused by WAN):
    git clone --no-checkout <snapshot> ~/ComfyUI-0.33.0 && cd ~/ComfyUI-0.33.0 &&
    git ls-files -z | grep -zv -e llama_tokenizer/tokenizer.json -e qwen35_tokenizer/vocab.json | xargs -0 git checkout HEAD --
MSG
  } >&2
  exit 3
fi

base_python="${WANFIT_BASE_PYTHON:-python3}"
venv_root="${WANFIT_VENV_ROOT:-$HOME/.cache/wanfit/venv}"

torch_spec_for() {  # the torch set each core needs on this machine (README, "Running the tests")
  case "$1" in
    0.3.64)
      case "$(uname -m)" in
        aarch64|arm64) echo "torch==2.9.1 torchvision==0.24.1" ;;
        *) echo "torch==2.14.1 torchvision==0.29.1" ;;
      esac ;;
    # 0.33 imports torchaudio at start-up (comfy/sd.py -> the audio VAE); 2.9 is the newest
    # torchaudio with a build for a torch that also has torchvision here.
    *) echo "torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1" ;;
  esac
}

prepare_venv() {  # version path -> prints the venv's python
  local version="$1" comfyui="$2"
  local venv="$venv_root/$version" python
  python="$venv/bin/python"
  local torch_spec
  torch_spec="${WANFIT_TORCH_SPEC:-$(torch_spec_for "$version")}"
  if [[ ! -x "$python" ]]; then
    echo "creating virtual environment $venv for ComfyUI $version" >&2
    "$base_python" -m venv "$venv"
  fi
  local stamp_file="$venv/.wanfit-requirements.sha256" stamp
  stamp="$(cat "$comfyui/requirements.txt" "$repo_root/requirements.txt" "$repo_root/tests/requirements.txt" <(echo "$torch_spec") | sha256sum | cut -d' ' -f1)"
  if [[ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]]; then
    local install_log="$venv/.wanfit-install.log"
    echo "installing ComfyUI $version's requirements into $venv (log: $install_log)" >&2
    : > "$install_log"
    pip_install() {
      if ! "$python" -m pip install -q "$@" >> "$install_log" 2>&1; then
        tail -n 40 "$install_log" >&2
        echo "error: pip install $* failed (full log: $install_log)" >&2
        exit 4
      fi
    }
    # torch first, as one set, so ComfyUI's unpinned torch lines cannot pull another build.
    # shellcheck disable=SC2086
    pip_install $torch_spec
    local comfy_requirements
    comfy_requirements="$(mktemp)"
    grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$comfyui/requirements.txt" > "$comfy_requirements"
    # shellcheck disable=SC2086
    pip_install -r "$comfy_requirements" -r "$repo_root/requirements.txt" -r "$repo_root/tests/requirements.txt" $torch_spec
    rm -f "$comfy_requirements"
    echo "$stamp" > "$stamp_file"
  fi
  echo "$python"
}

declare -A core_python
for version in "${selected_cores[@]}"; do
  core_python[$version]="$(prepare_venv "$version" "$(core_path "$version")")"
done

if ((setup_only)); then
  for version in "${selected_cores[@]}"; do
    echo "ready: ComfyUI $version at $(core_path "$version") with ${core_python[$version]}"
  done
  newest="${selected_cores[-1]}"
  echo "run the demo with: COMFYUI_PATH=$(core_path "$newest") ${core_python[$newest]} -m wanfit demo"
  exit 0
fi

cd "$repo_root"
fixtures_root="${WANFIT_FIXTURES_DIR:-$HOME/.cache/wanfit/fixtures}"
declare -A outcome
status=0

# Test paths given on the command line go to their own tier (tests/unit/..., tests/host/...,
# tests/browser/...); options (-k, -x, ...) go to every tier. Without paths each tier runs whole.
options=() unit_paths=() host_paths=() browser_paths=()
for argument in "${pytest_args[@]}"; do
  case "$argument" in
    tests/unit*) unit_paths+=("$argument") ;;
    tests/host*) host_paths+=("$argument") ;;
    tests/browser*) browser_paths+=("$argument") ;;
    *) options+=("$argument") ;;
  esac
done
if ((${#unit_paths[@]} + ${#host_paths[@]} + ${#browser_paths[@]} == 0)); then
  unit_paths=(tests/unit); host_paths=(tests/host); browser_paths=(tests/browser)
fi

chromium="${WANFIT_CHROMIUM:-/usr/bin/chromium}"
if ((${#browser_paths[@]})) && [[ ! -x "$chromium" ]]; then
  # Debian's Chromium; never a test tool's own browser download (the network here is the registries).
  if [[ "$(id -u)" == 0 ]] && command -v apt-get > /dev/null; then
    echo "installing Debian's chromium for the browser tier (log: /tmp/wanfit-apt-chromium.log)" >&2
    { apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; } \
      > /tmp/wanfit-apt-chromium.log 2>&1 || true
  fi
  if [[ ! -x "$chromium" ]]; then
    echo "error: the browser tier needs Chromium at $chromium" >&2
    echo "Fix: sudo apt-get install chromium (Debian/Ubuntu), or set WANFIT_CHROMIUM to a Chromium binary." >&2
    exit 4
  fi
fi

run_tier() {  # name python args... ; pytest's exit 5 (nothing collected) fails unless a filter was given
  local name="$1" python="$2"; shift 2
  local rc=0
  "$python" -m pytest "$@" || rc=$?
  if ((rc == 0)); then
    outcome[$name]="passed"
  elif ((rc == 5 && ${#pytest_args[@]} > 0)); then
    outcome[$name]="no test selected"
  else
    outcome[$name]="FAILED (pytest exit $rc)"; status=1
  fi
}

outcome[unit]="not run (no unit path given)"
if ((${#unit_paths[@]})); then
  unit_python="${core_python[${selected_cores[0]}]}"
  echo "=== unit tier (torch only; $("$unit_python" -c 'import torch; print("torch", torch.__version__)')) ==="
  run_tier unit "$unit_python" "${unit_paths[@]}" "${options[@]}"
fi

for version in "${selected_cores[@]}"; do
  outcome[$version]="not run (no host path given)"
  outcome[browser $version]="not run (no browser path given)"
  if ((${#host_paths[@]})); then
    echo "=== host tier on ComfyUI $version ($(core_path "$version")) ==="
    COMFYUI_PATH="$(core_path "$version")" WANFIT_FIXTURES_DIR="$fixtures_root/$version" \
      run_tier "$version" "${core_python[$version]}" "${host_paths[@]}" "${options[@]}"
  fi
  if ((${#browser_paths[@]})); then
    echo "=== browser tier on ComfyUI $version (headless $("$chromium" --version 2>/dev/null || echo Chromium)) ==="
    COMFYUI_PATH="$(core_path "$version")" WANFIT_FIXTURES_DIR="$fixtures_root/$version" WANFIT_CHROMIUM="$chromium" \
      run_tier "browser $version" "${core_python[$version]}" "${browser_paths[@]}" "${options[@]}"
  fi
done

echo "=== summary ==="
echo "unit tier: ${outcome[unit]}"
for version in "${selected_cores[@]}"; do
  echo "host tier on ComfyUI $version: ${outcome[$version]}"
  echo "browser tier on ComfyUI $version: ${outcome[browser $version]} (screenshots: $repo_root/artifacts/browser/$version)"
done
exit "$status"
