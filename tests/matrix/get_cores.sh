#!/usr/bin/env bash
# Checks out the release-matrix cores (tests/matrix/releases.txt) from a ComfyUI git history.
#
#   bash tests/matrix/get_cores.sh [HISTORY]   # HISTORY: a ComfyUI clone holding the releases,
#                                              # default $WANFIT_CORE_0_33_0 or ~/ComfyUI-0.33.0
#
# Each release goes to $WANFIT_CORE_<version with _> or ~/ComfyUI-<version>, as the test command
# looks for it. The release commit is the one that set comfyui_version.py to that version (the
# history need not carry tags). Files of 4 MiB or more that WAN never uses (two tokenizers) are
# left out, so a snapshot that lacks them works too. Existing folders are kept.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
history="${1:-${WANFIT_CORE_0_33_0:-$HOME/ComfyUI-0.33.0}}"
if ! git -C "$history" rev-parse --git-dir > /dev/null 2>&1; then
  echo "error: $history is not a ComfyUI git clone" >&2
  echo "Fix: git clone https://github.com/comfyanonymous/ComfyUI ~/ComfyUI-0.33.0, or pass a clone's path." >&2
  exit 2
fi
left_out='^comfy/text_encoders/(llama_tokenizer/tokenizer\.json|qwen35_tokenizer/vocab\.json)$'
while read -r version _; do
  [[ -z "$version" || "$version" == \#* ]] && continue
  var="WANFIT_CORE_${version//./_}"
  into="${!var:-$HOME/ComfyUI-$version}"
  if [[ -f "$into/comfyui_version.py" ]]; then
    echo "kept: $into"
    continue
  fi
  commit="$(git -C "$history" log --format=%H -S"__version__ = \"$version\"" -- comfyui_version.py 2> /dev/null | tail -n 1 || true)"
  if [[ -z "$commit" ]]; then
    echo "error: no commit in $history sets comfyui_version.py to $version" >&2
    echo "Fix: pass a clone with ComfyUI's full history (git clone https://github.com/comfyanonymous/ComfyUI)." >&2
    exit 3
  fi
  mkdir -p "$into.part"
  git -C "$history" ls-tree -r --name-only "$commit" | grep -Ev "$left_out" |
    tr '\n' '\0' | xargs -0 git -C "$history" archive "$commit" -- | tar -x -C "$into.part"
  mv "$into.part" "$into"
  echo "checked out ComfyUI $version (${commit:0:10}) into $into"
done < "$repo_root/tests/matrix/releases.txt"
