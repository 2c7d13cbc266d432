#!/usr/bin/env bash
# The test command (README "Running the tests"; .ci/run runs exactly this).
# Finds each supported ComfyUI core, prepares one cached virtual environment per core outside
# the repository (ComfyUI's requirements, the torch set that core needs, ours), then runs the
# unit tier once, and against every core the host tier (a real ComfyUI server on 127.0.0.1) and
# the browser tier (that server's own front end in headless Chromium: Debian's chromium package,
# installed here when missing, driven by Playwright; screenshots in artifacts/browser/<core>), and on
# the newest core the browser tier once more against the newest front end from PyPI (see frontend_root).
#
# Between the unit tier and the cores' tiers, the matrix tier runs once: in-process checks against every
# release in tests/matrix/releases.txt and both cores, all with 0.33.0's venv (bash tests/matrix/get_cores.sh).
#
#   bash tests/run.sh                     # unit + matrix tiers, host and browser tiers on 0.3.64 and on 0.33.0
#   bash tests/run.sh --core 0.33.0 -k plan   # one core; extra arguments go to pytest
#   bash tests/run.sh --setup-only        # prepare the environments and stop
#
# Core checkouts: $WANFIT_CORE_0_3_64 (default ~/ComfyUI-0.3.64) and $WANFIT_CORE_0_33_0
# (default ~/ComfyUI-0.33.0). Venvs: $WANFIT_VENV_ROOT/<version> (default ~/.cache/wanfit/venv).
# The host tier also needs a ComfyUI-GGUF checkout: $WANFIT_COMFYUI_GGUF (default ~/ComfyUI-GGUF).
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

# The matrix tier (tests/matrix): once, with the newest core's venv, against each release in
# tests/matrix/releases.txt (plus both cores). It runs when no test path is given or a tests/matrix path is.
matrix_core="${supported_cores[-1]}"
matrix_releases=()
while read -r version _; do
  [[ -z "$version" || "$version" == \#* ]] && continue
  matrix_releases+=("$version")
done < "$repo_root/tests/matrix/releases.txt"
matrix_count=$((${#matrix_releases[@]} + ${#supported_cores[@]}))
run_matrix=1 matrix_reason=""
for argument in "${pytest_args[@]}"; do
  case "$argument" in
    tests/matrix*) run_matrix=2; break ;;
    tests/*) run_matrix=0 matrix_reason="not run (no matrix path given)" ;;
  esac
done
if ((run_matrix)) && [[ " ${selected_cores[*]} " != *" $matrix_core "* ]]; then
  if ((run_matrix == 2)); then
    echo "error: the matrix tier runs with ComfyUI $matrix_core's venv; --core $only_core leaves it out" >&2
    echo "Fix: bash tests/run.sh --core $matrix_core tests/matrix (or drop --core)." >&2
    exit 2
  fi
  run_matrix=0 matrix_reason="not run (it runs with ComfyUI $matrix_core's venv; --core $only_core given)"
fi
if ((run_matrix && !setup_only)); then
  missing_releases=()
  for version in "${matrix_releases[@]}"; do
    path="$(core_path "$version")"
    if [[ ! -f "$path/comfyui_version.py" || ! -d "$path/comfy" ]]; then
      missing_releases+=("$version")
    elif [[ "$(core_version_of "$path")" != "$version" ]]; then
      echo "error: $path holds ComfyUI $(core_version_of "$path"), not $version (tests/matrix/releases.txt)" >&2
      echo "Fix: move it aside and run bash tests/matrix/get_cores.sh, or set WANFIT_CORE_${version//./_} to a checkout of $version." >&2
      exit 3
    fi
  done
  if ((${#missing_releases[@]})); then
    {
      for version in "${missing_releases[@]}"; do
        echo "error: no ComfyUI $version checkout found at $(core_path "$version") (release matrix)"
      done
      cat <<MSG
  The matrix tier checks WanFit against each release in tests/matrix/releases.txt (${#matrix_releases[@]} releases),
  each looked for at \$WANFIT_CORE_<version with _> (e.g. WANFIT_CORE_0_21_0), else ~/ComfyUI-<version>.
Fix: check them out from a ComfyUI git history (by default the clone at $(core_path "$matrix_core")), then run
  this command again (bash tests/run.sh):
    bash tests/matrix/get_cores.sh            # or: bash tests/matrix/get_cores.sh <a ComfyUI clone with full history>
  To run without the matrix tier, name the other tiers: bash tests/run.sh tests/unit tests/host tests/browser
MSG
    } >&2
    exit 3
  fi
fi

# ComfyUI-GGUF, the downstream loader the host tier runs WanFit's nodes behind (tests/host/test_gguf_downstream.py):
# a checkout of github.com/city96/ComfyUI-GGUF, linked into that test's server only, never copied here.
comfyui_gguf="${WANFIT_COMFYUI_GGUF:-$HOME/ComfyUI-GGUF}"
host_selected=1
for argument in "${pytest_args[@]}"; do
  case "$argument" in
    tests/host*) host_selected=1; break ;;
    tests/*) host_selected=0 ;;
  esac
done
if ((host_selected && !setup_only)) && [[ ! -f "$comfyui_gguf/nodes.py" || ! -f "$comfyui_gguf/loader.py" ]]; then
  cat >&2 <<MSG
error: no ComfyUI-GGUF checkout found at $comfyui_gguf
  The host tier runs WanFit's nodes on models loaded by ComfyUI-GGUF's Unet Loader (GGUF); the checkout is
  looked for at \$WANFIT_COMFYUI_GGUF, else ~/ComfyUI-GGUF.
Fix: check it out, then run this command again (bash tests/run.sh):
    git clone https://github.com/city96/ComfyUI-GGUF ~/ComfyUI-GGUF
  Where only a stored snapshot is reachable:
    git clone --no-checkout <snapshot> ~/ComfyUI-GGUF && cd ~/ComfyUI-GGUF && git checkout HEAD -- .
MSG
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
  # The downstream custom nodes' packages (ComfyUI-GGUF's gguf) have their own stamp: adding one installs
  # just that package into an existing venv.
  local downstream_stamp_file="$venv/.wanfit-downstream.sha256" downstream_stamp
  downstream_stamp="$(sha256sum < "$repo_root/tests/downstream-requirements.txt" | cut -d' ' -f1)"
  if [[ "$(cat "$downstream_stamp_file" 2>/dev/null)" != "$downstream_stamp" ]]; then
    local downstream_log="$venv/.wanfit-downstream-install.log"
    echo "installing tests/downstream-requirements.txt into $venv (log: $downstream_log)" >&2
    if ! "$python" -m pip install -q -r "$repo_root/tests/downstream-requirements.txt" > "$downstream_log" 2>&1; then
      tail -n 40 "$downstream_log" >&2
      echo "error: pip install -r tests/downstream-requirements.txt failed (full log: $downstream_log)" >&2
      exit 4
    fi
    echo "$downstream_stamp" > "$downstream_stamp_file"
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
declare -A outcome tier_seconds
status=0

# Test paths given on the command line go to their own tier (tests/unit/..., tests/matrix/...,
# tests/host/..., tests/browser/...); options (-k, -x, ...) go to every tier. Without paths each tier runs whole.
options=() unit_paths=() matrix_paths=() host_paths=() browser_paths=()
for argument in "${pytest_args[@]}"; do
  case "$argument" in
    tests/unit*) unit_paths+=("$argument") ;;
    tests/matrix*) matrix_paths+=("$argument") ;;
    tests/host*) host_paths+=("$argument") ;;
    tests/browser*) browser_paths+=("$argument") ;;
    *) options+=("$argument") ;;
  esac
done
if ((${#unit_paths[@]} + ${#matrix_paths[@]} + ${#host_paths[@]} + ${#browser_paths[@]} == 0)); then
  unit_paths=(tests/unit); host_paths=(tests/host); browser_paths=(tests/browser)
  if ((run_matrix)); then matrix_paths=(tests/matrix); fi
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

# The browser tier runs once more on the newest core with the newest ComfyUI front end: PyPI's
# comfyui-frontend-package, its wheel's static folder unpacked once into the cache and served through
# --front-end-root (tests/browser/conftest.py reads WANFIT_FRONTEND_ROOT).
frontend_core="${supported_cores[-1]}"
frontend_version="${WANFIT_FRONTEND_VERSION:-1.58.1}"
frontend_cache="${WANFIT_FRONTEND_CACHE:-$HOME/.cache/wanfit/frontend}"
frontend_root() {  # python -> the cached static folder of comfyui-frontend-package==$frontend_version
  local python="$1" folder="$frontend_cache/$frontend_version" download
  if [[ ! -f "$folder/index.html" ]]; then
    download="$(mktemp -d)"
    echo "fetching comfyui-frontend-package==$frontend_version into $folder (log: $download/pip.log)" >&2
    if ! { "$python" -m pip download --no-deps -d "$download" "comfyui-frontend-package==$frontend_version" \
             > "$download/pip.log" 2>&1 &&
           "$python" - "$download" "$folder" <<'PY'
import pathlib, shutil, sys, zipfile
download, folder = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(wheel,) = download.glob("comfyui_frontend_package-*.whl")
with zipfile.ZipFile(wheel) as archive:
    archive.extractall(download / "unpacked")
partial = folder.with_name(folder.name + ".partial")
shutil.rmtree(partial, ignore_errors=True)
partial.parent.mkdir(parents=True, exist_ok=True)
shutil.move(download / "unpacked" / "comfyui_frontend_package" / "static", partial)
partial.rename(folder)
PY
         }; then
      tail -n 4 "$download/pip.log" >&2
      cat >&2 <<MSG
error: could not fetch the front end comfyui-frontend-package==$frontend_version for the browser tier
Fix: let pip reach PyPI and run this command again, or unpack the wheel's comfyui_frontend_package/static
  folder into $folder yourself:
    pip download --no-deps -d /tmp/frontend comfyui-frontend-package==$frontend_version
    mkdir -p $frontend_cache && unzip -q /tmp/frontend/comfyui_frontend_package-$frontend_version-*.whl 'comfyui_frontend_package/static/*' -d /tmp/frontend
    mv /tmp/frontend/comfyui_frontend_package/static $folder
MSG
      exit 4
    fi
    rm -rf "$download"
  fi
  echo "$folder"
}
frontend_dir=""
if ((${#browser_paths[@]})) && [[ " ${selected_cores[*]} " == *" $frontend_core "* ]]; then
  frontend_dir="$(frontend_root "${core_python[$frontend_core]}")"
fi

run_tier() {  # name python args... ; pytest's exit 5 (nothing collected) fails unless a filter was given
  local name="$1" python="$2"; shift 2
  local rc=0 started=$SECONDS
  # the slowest tests of each tier are listed, so the CI time can be watched where it grows
  "$python" -m pytest --durations=12 "$@" || rc=$?
  tier_seconds[$name]=$((SECONDS - started))
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

outcome[matrix]="${matrix_reason:-not run (no matrix path given)}"
if ((${#matrix_paths[@]})); then
  echo "=== matrix tier ($matrix_count releases, in-process, ComfyUI $matrix_core's venv) ==="
  run_tier matrix "${core_python[$matrix_core]}" "${matrix_paths[@]}" "${options[@]}"
fi

for version in "${selected_cores[@]}"; do
  outcome[$version]="not run (no host path given)"
  outcome[browser $version]="not run (no browser path given)"
  if ((${#host_paths[@]})); then
    echo "=== host tier on ComfyUI $version ($(core_path "$version")) ==="
    COMFYUI_PATH="$(core_path "$version")" WANFIT_FIXTURES_DIR="$fixtures_root/$version" \
      WANFIT_COMFYUI_GGUF="$comfyui_gguf" run_tier "$version" "${core_python[$version]}" "${host_paths[@]}" "${options[@]}"
  fi
  if ((${#browser_paths[@]})); then
    echo "=== browser tier on ComfyUI $version (headless $("$chromium" --version 2>/dev/null || echo Chromium)) ==="
    COMFYUI_PATH="$(core_path "$version")" WANFIT_FIXTURES_DIR="$fixtures_root/$version" WANFIT_CHROMIUM="$chromium" \
      run_tier "browser $version" "${core_python[$version]}" "${browser_paths[@]}" "${options[@]}"
    if [[ "$version" == "$frontend_core" ]]; then
      echo "=== browser tier on ComfyUI $version with front end $frontend_version ($frontend_dir) ==="
      COMFYUI_PATH="$(core_path "$version")" WANFIT_FIXTURES_DIR="$fixtures_root/$version" WANFIT_CHROMIUM="$chromium" \
        WANFIT_FRONTEND_ROOT="$frontend_dir" \
        run_tier "browser $version frontend" "${core_python[$version]}" "${browser_paths[@]}" "${options[@]}"
    fi
  fi
done

echo "=== summary (${SECONDS} s in all) ==="
for name in "${!tier_seconds[@]}"; do echo "time: $name ${tier_seconds[$name]} s"; done | sort
echo "unit tier: ${outcome[unit]}"
echo "matrix tier ($matrix_count releases, ComfyUI $matrix_core's venv): ${outcome[matrix]}"
for version in "${selected_cores[@]}"; do
  echo "host tier on ComfyUI $version: ${outcome[$version]}"
  echo "browser tier on ComfyUI $version: ${outcome[browser $version]} (screenshots: $repo_root/artifacts/browser/$version)"
  if [[ "$version" == "$frontend_core" ]]; then
    echo "browser tier on ComfyUI $version with front end $frontend_version:" \
      "${outcome[browser $version frontend]:-not run (no browser path given)}" \
      "(screenshots: $repo_root/artifacts/browser/$version-frontend-$frontend_version)"
  fi
done
exit "$status"
