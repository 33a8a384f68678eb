"""Nodes: Impact Pack interop. FACES -> SEGS for Impact's detailers and SEGS tools, and SEGS (or
anything Impact detected) -> FACES for the pack's restore, align and inspection nodes. SEGS are
built and read by their contract (restoreformer_node.faces.segs); Impact Pack is never imported."""

from __future__ import annotations

from ..faces.detection import load_detector, summarize
from ..faces.segs import DEFAULT_CROP_FACTOR, as_face_detector, faces_to_segs, segs_to_faces
from ..options import DEFAULT_DETECTOR
from .common import FACES_CATEGORY, check_image, compute_device
from .types import DETECTOR, FACES, SEGS


class FacesToSEGS:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The image the faces were found in (one image: SEGS describe one)."}),
                "faces": (FACES, {"tooltip": "Faces from Detect Faces (or SEGS to Faces)."}),
                "crop_factor": (
                    "FLOAT",
                    {"default": DEFAULT_CROP_FACTOR, "min": 1.0, "max": 10.0, "step": 0.1,
                     "tooltip": "Size of each segment's crop region around the face box, as Impact's detectors "
                     "make it: 3 gives the face box three times as wide and high, shifted inside the image."},
                ),
            }
        }

    RETURN_TYPES = (SEGS,)
    RETURN_NAMES = ("segs",)
    OUTPUT_TOOLTIPS = (
        "Impact Pack SEGS: one segment per face (label 'face', the face box as bbox and as a rectangular "
        "mask, the detector's confidence, the crop of the image), for Detailer (SEGS), SEGS Paste, "
        "SEGS to MASK and the other SEGS nodes.",
    )
    FUNCTION = "convert"
    CATEGORY = FACES_CATEGORY
    DESCRIPTION = (
        "Turns faces found by the pack into Impact Pack SEGS, so Impact's detailers and SEGS nodes work on "
        "them. Works without Impact Pack installed (the SEGS are built by Impact's own layout)."
    )

    def convert(self, image, faces, crop_factor):
        return (faces_to_segs(check_image(image), faces, float(crop_factor)),)


class SEGSToFaces:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The image the SEGS were found in (every image of a batch "
                          "is searched at the SEGS' boxes, as Impact applies SEGS to every frame)."}),
                "segs": (SEGS, {"tooltip": "Impact Pack SEGS, e.g. from BBOX Detector (SEGS) with a YOLO face "
                         "model, or from Faces to SEGS."}),
            },
            "optional": {
                "detector": (
                    DETECTOR,
                    {"tooltip": "Finds the 5 landmarks inside each segment's box (boxes alone cannot be "
                     "aligned). Unconnected: MTCNN."},
                ),
            },
        }

    RETURN_TYPES = (FACES, "INT", "STRING")
    RETURN_NAMES = ("faces", "count", "summary")
    OUTPUT_TOOLTIPS = (
        "One face per segment in which a face was found, in the SEGS' order, with landmarks and the "
        "alignment to the 512x512 template: for Restore Faces, Align Faces and the inspection nodes.",
        "How many faces were found.",
        "The faces per segment, and the segments in which no face was found.",
    )
    FUNCTION = "convert"
    CATEGORY = FACES_CATEGORY
    DESCRIPTION = (
        "Turns Impact Pack SEGS into faces: the pack's detector runs inside every segment's box to find the "
        "landmarks the alignment needs. Works without Impact Pack installed."
    )

    def convert(self, image, segs, detector=None):
        image = check_image(image)
        detector = as_face_detector(detector, compute_device()) or load_detector(DEFAULT_DETECTOR, device=compute_device())
        faces = segs_to_faces(detector, image, segs)
        return (faces, len(faces), summarize(faces))


NODES = {
    "RestoreFormerFacesToSEGS": (FacesToSEGS, "Faces to SEGS (RestoreFormer)"),
    "RestoreFormerSEGSToFaces": (SEGSToFaces, "SEGS to Faces (RestoreFormer)"),
}
