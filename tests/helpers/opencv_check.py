"""Detection (MTCNN, and facexlib's RetinaFace, which imports cv2) and a restore through the pack
on the CPU, reported as JSON. tests/packaging/test_opencv_headless.py runs it in a fresh virtual
environment whose OpenCV is opencv-python-headless, and in the test process (opencv-python), and
compares the two. It imports only the pack and what the pack's requirements install.

    python tests/helpers/opencv_check.py PHOTO MODEL RETINAFACE_WEIGHTS
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import sys

RETINAFACE = "retinaface_mobilenet0.25"


def opencv() -> dict:
    """Which distributions claim the cv2 module, and whether it imports."""
    owners = sorted(importlib.metadata.packages_distributions().get("cv2", []))
    try:
        import cv2

        return {"owners": owners, "version": cv2.__version__, "error": None}
    except ImportError as error:
        return {"owners": owners, "version": None, "error": str(error)}


def run(photo: str, model: str, retinaface_weights: str) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from restoreformer_node.faces.detection import find_faces, load_detector
    from restoreformer_node.faces.pipeline import restore_faces
    from restoreformer_node.weights import load_restoreformer

    torch.set_num_threads(1)  # one summation order in both environments
    pixels = np.asarray(Image.open(photo).convert("RGB")).copy()
    image = torch.from_numpy(pixels).float()[None] / 255
    result = {"opencv": opencv(), "facexlib_loaded_at_import": "facexlib" in sys.modules}

    faces = find_faces(load_detector("mtcnn"), image)
    restored = restore_faces(image, load_restoreformer(model), faces)
    out = (restored.images[0] * 255).round().to(torch.uint8).numpy()
    result["mtcnn_boxes"] = [[round(v, 3) for v in face.box.tolist()] for face in faces.faces]
    result["restored_sha256"] = hashlib.sha256(out.tobytes()).hexdigest()
    result["changed_pixels"] = int((out != pixels).any(-1).sum())
    result["report"] = restored.report.lines()
    try:
        found = find_faces(load_detector(RETINAFACE, retinaface_weights), image)
        boxes = [[round(v, 3) for v in face.box.tolist()] for face in found.faces]
        result["retinaface_faces"] = len(boxes)
        result["retinaface_sha256"] = hashlib.sha256(json.dumps(boxes).encode()).hexdigest()
    except ImportError as error:
        result["retinaface_error"] = str(error)
    return result


if __name__ == "__main__":
    if importlib.util.find_spec("restoreformer_node") is None:
        raise SystemExit("put the repository root on PYTHONPATH")
    print(json.dumps(run(*sys.argv[1:4])))
