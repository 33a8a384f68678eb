"""facexlib's RetinaFace (ResNet-50 or MobileNet-0.25) with weights from a file the user provides.

facexlib's own loader downloads missing files; this one never does. The network class is built
with `pretrained=False` backbones (torchvision downloads nothing then) and the state dict is read
with `torch.load(weights_only=True)` (or safetensors), `module.` prefixes stripped, strictly.

Pre/post-processing is facexlib's `batched_detect_faces`: BGR on the 0..255 scale minus the means
(104, 117, 123), no resizing (use_origin_size), priors of 16-512 px on strides 8/16/32, box and
landmark decoding with variances (0.1, 0.2), a score threshold, then NMS at IoU 0.4. Its landmarks
are left eye, right eye, nose, left mouth corner, right mouth corner (image left first), the order
facexlib's FaceRestoreHelper feeds to the 512 template.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ..weight_files import load_strict, missing_file_message, read_state
from .base import Detection, FaceDetector, finite_detection

# facexlib imports cv2, which opencv-python (facexlib's requirement) and opencv-python-headless
# (other packs') both provide, into the same folder: with both installed, removing one removes
# cv2 for the other. Keeping exactly one works; these commands keep the headless one (README: OpenCV).
OPENCV_FIX = (
    "python -m pip uninstall -y opencv-python opencv-python-headless",
    "python -m pip install opencv-python-headless",
)

RELEASE_PAGE = "https://github.com/xinntao/facexlib/releases/tag/v0.1.0"
RELEASE_DOWNLOAD = "https://github.com/xinntao/facexlib/releases/download/v0.1.0/"

# detector kind (one of options.DETECTORS) -> (facexlib network name, weight file name, size in bytes)
NETWORKS = {
    "retinaface_resnet50": ("resnet50", "detection_Resnet50_Final.pth", 109_497_761),
    "retinaface_mobilenet0.25": ("mobile0.25", "detection_mobilenet0.25_Final.pth", 1_789_735),
}

# facexlib.detect_faces' default; FaceRestoreHelper (the official RestoreFormer inference) keeps
# faces scoring over 0.97. Finer filtering is the selection's min_score.
SCORE_THRESHOLD = 0.5
NMS_IOU = 0.4


class DetectorWeightsMissing(FileNotFoundError):
    """A detector's weight file is absent; the message says which file, where, and from where."""


def weight_file_name(kind: str) -> str:
    return NETWORKS[kind][1]


def missing_weights_message(kind: str, folders: list[str] | tuple[str, ...]) -> str:
    file_name = weight_file_name(kind)
    return missing_file_message(
        kind, file_name, folders, f"{RELEASE_DOWNLOAD}{file_name} (facexlib's GitHub release v0.1.0, {RELEASE_PAGE})",
        ", or choose the 'mtcnn' detector, whose weights ship with facenet-pytorch",
    )


def _facexlib_retinaface():
    """facexlib's RetinaFace network class, or one error that names the fix when facexlib (or the
    cv2 it imports) cannot be imported."""
    try:
        from facexlib.detection.retinaface import RetinaFace
    except ImportError as error:
        fix = (
            f"keep exactly one OpenCV wheel: `{OPENCV_FIX[0]}`, then `{OPENCV_FIX[1]}` (or opencv-python)"
            if "cv2" in str(error)
            else "`python -m pip install facexlib` with ComfyUI's Python"
        )
        raise ImportError(
            f"RetinaFace needs facexlib, which could not be imported ({error}). Fix: {fix}. "
            "MTCNN needs neither."
        ) from error
    return RetinaFace


class RetinaFaceDetector(FaceDetector):
    name = "RetinaFace (facexlib)"

    def __init__(
        self,
        kind: str,
        weights_path: str | os.PathLike,
        device: torch.device | str = "cpu",
        score_threshold: float = SCORE_THRESHOLD,
    ):
        super().__init__(device)
        if kind not in NETWORKS:
            raise ValueError(f"unknown RetinaFace kind {kind!r}; choose one of {sorted(NETWORKS)}")
        self.kind = kind
        self.name = f"RetinaFace {NETWORKS[kind][0]} (facexlib)"
        self.weights_path = Path(weights_path)
        self.score_threshold = score_threshold
        if not self.weights_path.is_file():
            raise DetectorWeightsMissing(missing_weights_message(kind, [str(self.weights_path.parent)]))
        file_name = weight_file_name(kind)
        state = read_state(
            self.weights_path, f"{kind} detector weights", f"use facexlib's {file_name} from {RELEASE_DOWNLOAD}{file_name}"
        )
        RetinaFace = _facexlib_retinaface()
        with warnings.catch_warnings():
            # facexlib asks torchvision for resnet50(pretrained=False): deprecated, downloads nothing.
            warnings.simplefilter("ignore", UserWarning)
            net = RetinaFace(network_name=NETWORKS[kind][0], half=False, phase="test", device=self.device)
        load_strict(net, state, self.weights_path, f"{self.name} (is it the right file for {kind}?)", file_name)
        self.net = net.eval()

    def _detect_chunk(self, rgb255: torch.Tensor) -> list[Detection]:
        # facexlib's batched path takes [b, h, w, 3] BGR on the 0..255 scale and subtracts the means.
        bgr = rgb255.flip(1).permute(0, 2, 3, 1).contiguous()
        boxes, landmarks = self.net.batched_detect_faces(
            bgr, conf_threshold=self.score_threshold, nms_threshold=NMS_IOU, use_origin_size=True
        )
        found = []
        for box, landmark in zip(boxes, landmarks):
            box = torch.as_tensor(box, dtype=torch.float32).reshape(-1, 5)
            landmark = torch.as_tensor(landmark, dtype=torch.float32).reshape(-1, 5, 2)
            found.append(finite_detection(box[:, :4], landmark, box[:, 4]))
        return found

