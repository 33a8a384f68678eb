"""Nodes: choose a face detector, detect faces (IMAGE -> FACES + preview + count + summary)."""

from __future__ import annotations

import os

from ..faces.detection import (
    DEFAULT_MAX_SIDE,
    MIN_IMAGE_SIDE,
    DetectorWeightsMissing,
    FaceSelection,
    find_faces_detailed,
    load_detector,
    missing_weights_message,
    needs_weights,
    parse_indices,
    summarize,
    weight_file_name,
)
from ..faces.preview import draw_detections
from ..faces.segs import as_face_detector
from ..options import DEFAULT_DETECTOR, DETECTORS, FACE_ORDERS, FACE_SELECT_MODES
from .common import DETECTOR_FOLDER, FACES_CATEGORY, Progress, compute_device, register_models_folder
from .types import DETECTOR, DETECTOR_OR_BBOX, FACES


def register_detector_folder() -> None:
    """Make ComfyUI know models/facedetection."""
    register_models_folder(DETECTOR_FOLDER)


try:  # at load time inside ComfyUI; without ComfyUI the module still imports (for docs, tooling)
    register_detector_folder()
except ImportError:
    pass


def detector_weights(kind: str) -> str | None:
    """Full path of a RetinaFace kind's file in the facedetection folders (None for MTCNN).
    Raises DetectorWeightsMissing naming the file, the folders and the download page."""
    if not needs_weights(kind):
        return None
    import folder_paths

    register_detector_folder()
    name = weight_file_name(kind)
    path = folder_paths.get_full_path(DETECTOR_FOLDER, name)
    if path is None:
        raise DetectorWeightsMissing(
            missing_weights_message(kind, folder_paths.get_folder_paths(DETECTOR_FOLDER))
        )
    return path


class LoadFaceDetector:
    SEARCH_ALIASES = ["face detector", "load face detector", "retinaface", "mtcnn", "facexlib"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "detector": (
                    list(DETECTORS),
                    {
                        "default": DEFAULT_DETECTOR,
                        "tooltip": "mtcnn: works out of the box (weights ship with facenet-pytorch). "
                        "retinaface_resnet50: the detector of the official RestoreFormer inference, "
                        "needs detection_Resnet50_Final.pth in models/facedetection. "
                        "retinaface_mobilenet0.25: small and fast, needs "
                        "detection_mobilenet0.25_Final.pth in models/facedetection.",
                    },
                ),
            }
        }

    RETURN_TYPES = (DETECTOR,)
    RETURN_NAMES = ("detector",)
    OUTPUT_TOOLTIPS = ("A face detector for Detect Faces (and Face Restore).",)
    FUNCTION = "load"
    CATEGORY = FACES_CATEGORY
    DESCRIPTION = "Chooses the face detector. RetinaFace weights are read from models/facedetection."

    @classmethod
    def IS_CHANGED(cls, detector: str):
        """A replaced weight file (same name, new contents) is loaded again on the next run."""
        try:
            path = detector_weights(detector)
        except FileNotFoundError:
            return "missing"
        if path is None:
            return detector
        stat = os.stat(path)
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"

    def load(self, detector: str):
        return (load_detector(detector, detector_weights(detector), compute_device()),)


class DetectFaces:
    SEARCH_ALIASES = ["face detection", "find faces", "face bbox", "face detector"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": (
                    "IMAGE",
                    {
                        "tooltip": "Images to find faces in (a batch is searched image by image; RGBA and gray work)."
                    },
                ),
                "select": (
                    list(FACE_SELECT_MODES),
                    {
                        "default": "all",
                        "tooltip": "all: every face; largest: the largest face of each image; "
                        "by index: the faces listed in face_index (positions in the chosen order, per image).",
                    },
                ),
                "face_index": (
                    "STRING",
                    {
                        "default": "0",
                        "tooltip": "Used by select = by index: positions from 0, comma separated; ranges as 1-3; "
                        "-1 is the last face. The preview labels every face with its position.",
                    },
                ),
                "order": (
                    list(FACE_ORDERS),
                    {
                        "default": "left to right",
                        "tooltip": "Order of the faces of each image (and of the indices).",
                    },
                ),
                "min_size": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 16384,
                        "step": 1,
                        "tooltip": "Ignore faces whose box is smaller than this many pixels (the larger "
                        "of its width and height, in the input image).",
                    },
                ),
                "min_score": (
                    "FLOAT",
                    {
                        "default": 0.95,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Ignore detections less confident than this. Lower it for very degraded "
                        "faces, raise it if non-faces are picked up (the official inference uses 0.97).",
                    },
                ),
                "max_side": (
                    "INT",
                    {
                        "default": DEFAULT_MAX_SIDE,
                        "min": 128,
                        "max": 16384,
                        "step": 32,
                        "tooltip": "Larger images are searched on a copy shrunk to this longest side (faster, "
                        "less memory); boxes and landmarks are mapped back to full resolution. Raise it to "
                        "find small faces in large images.",
                    },
                ),
            },
            "optional": {
                "detector": (
                    DETECTOR_OR_BBOX,
                    {"tooltip": "From Load Face Detector (RestoreFormer), or an Impact Pack BBOX_DETECTOR (e.g. a YOLO face "
                     "model from UltralyticsDetectorProvider): it finds the boxes (threshold 0.5) and MTCNN "
                     "finds the landmarks inside each. Unconnected: MTCNN."},
                ),
            },
        }

    RETURN_TYPES = (FACES, "IMAGE", "INT", "STRING")
    RETURN_NAMES = ("faces", "preview", "count", "summary")
    OUTPUT_TOOLTIPS = (
        "The selected faces: image index, box, 5 landmarks, score and the transform to the 512x512 template.",
        "The images with every face found: chosen faces in colour with their landmarks, others in grey, "
        "each labelled with its position and score.",
        "How many faces were selected.",
        "What was found, per face, and why nothing was (when so).",
    )
    FUNCTION = "detect"
    CATEGORY = FACES_CATEGORY
    DESCRIPTION = "Finds faces, their 5 landmarks and their alignment to the 512x512 RestoreFormer template."

    def detect(
        self,
        images,
        select: str,
        face_index: str,
        order: str,
        min_size: int,
        min_score: float,
        max_side: int,
        detector=None,
    ):
        if detector is None:
            detector = load_detector(DEFAULT_DETECTOR, device=compute_device())
        detector = as_face_detector(detector, compute_device())
        indices = parse_indices(face_index) if select == "by index" else ()
        selection = FaceSelection(select, indices, float(min_size), float(min_score), order)
        faces, per_image = find_faces_detailed(
            detector, images, selection, max(max_side, MIN_IMAGE_SIDE), progress=Progress(images.shape[0])
        )
        preview = draw_detections(images, [(s.ordered, s.chosen) for s in per_image]).cpu()
        return (faces, preview, len(faces), summarize(faces))


NODES = {
    "RestoreFormerLoadFaceDetector": (LoadFaceDetector, "Load Face Detector (RestoreFormer)"),
    "RestoreFormerDetectFaces": (DetectFaces, "Detect Faces (RestoreFormer)"),
}
