"""Impact Pack interop without Impact Pack: SEGS built and read by its contract, faces from boxes
(landmarks from the pack's detector inside each box), and a BBOX_DETECTOR driving detection.

Impact's facts the tests rely on (read from its source): a SEG is a namedtuple of cropped_image,
cropped_mask, confidence, crop_region, bbox, label, control_net_wrapper; its BBOX detectors make
crop_region by scaling the box about its centre by crop_factor and shifting (not clipping) it
inside the image; cropped_image is a [1, h, w, 3] view of the image; cropped_mask a numpy float32
array of the crop's size; confidence a small numpy array; bbox a float numpy array in image
pixels; label "face"; segs[0] the image's (height, width).
"""

from __future__ import annotations

import sys
import types
from collections import namedtuple

import numpy as np
import pytest
import torch
from helpers.detection import image_batch, network_blocked

from restoreformer_node.faces.detection import FaceSelection, find_faces
from restoreformer_node.faces.segs import (
    SEG_FIELDS,
    BoxDetector,
    as_face_detector,
    check_segs,
    crop_region,
    faces_to_segs,
    seg_class,
    segs_to_faces,
)

# Landmark error allowed after a round trip, as a share of the distance between the eyes: 0.08 is
# the usual "failed detection" bound of landmark benchmarks (300-W normalised mean error).
LANDMARK_TOLERANCE = 0.08


@pytest.fixture(scope="module", autouse=True)
def no_network():
    with network_blocked():
        yield


@pytest.fixture(scope="module")
def photo(astronaut) -> torch.Tensor:
    """[1, 256, 320, 3]: the astronaut at half size on a wider canvas (face ~55 px)."""
    image = image_batch(astronaut).permute(0, 3, 1, 2)
    half = torch.nn.functional.interpolate(image, size=(256, 256), mode="area").permute(0, 2, 3, 1)
    canvas = torch.zeros(1, 256, 320, 3)
    canvas[:, :, 40:296] = half
    return canvas


@pytest.fixture(scope="module")
def found(mtcnn, photo):
    faces = find_faces(mtcnn, photo)
    assert len(faces) == 1
    return faces


def impact_segs(image: torch.Tensor, boxes, crop_factor: float = 3.0):
    """SEGS as Impact Pack's UltraBBoxDetector builds them from YOLO boxes."""
    SEG = namedtuple("SEG", SEG_FIELDS, defaults=[None])
    _, H, W, _ = image.shape
    segs = []
    for x0, y0, x1, y1 in boxes:
        region = crop_region(W, H, (x0, y0, x1, y1), crop_factor)
        rx0, ry0, rx1, ry1 = region
        full = np.zeros((H, W), dtype=np.float32)
        full[int(y0) : int(y1), int(x0) : int(x1)] = 1.0
        segs.append(
            SEG(
                image[:, ry0:ry1, rx0:rx1, :], full[ry0:ry1, rx0:rx1], np.array([0.87], dtype=np.float32),
                region, np.array([x0, y0, x1, y1], dtype=np.float32), "face", None,
            )
        )
    return ((H, W), segs)


def nme(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest landmark distance between two [5, 2] sets over the distance between a's eyes."""
    return float((a - b).norm(dim=1).max() / (a[1] - a[0]).norm())


def test_crop_regions_follow_impacts_rule():
    # worked by hand: centre (150, 110), 300 x 360 region; x fits, y starts at -70 and shifts to 0
    assert crop_region(640, 480, (100, 50, 200, 170), 3.0) == [0, 0, 300, 360]
    # inside: centre (300, 250), 150 x 150 -> starts at int(225.0)
    assert crop_region(640, 480, (275, 225, 325, 275), 3.0) == [225, 175, 375, 325]
    # past the right / bottom edge: shifted back to end at the edge
    assert crop_region(640, 480, (600, 440, 640, 480), 2.0) == [560, 400, 640, 480]
    # larger than the image: the whole axis
    assert crop_region(100, 80, (10, 10, 90, 70), 3.0) == [0, 0, 100, 80]
    # int() truncates toward zero as Impact's does: centre 10.25 - 10.5 = -0.25 -> 0
    assert crop_region(200, 200, (5.0, 5.0, 15.5, 15.5), 2.0)[:2] == [0, 0]


def test_faces_to_segs_meets_what_impacts_consumers_need(photo, found):
    segs = faces_to_segs(photo, found, crop_factor=3.0)
    assert segs[0] == (256, 320) and all(type(v) is int for v in segs[0])
    (seg,) = segs[1]
    assert seg._fields == SEG_FIELDS and seg.label == "face" and seg.control_net_wrapper is None
    x0, y0, x1, y1 = seg.crop_region
    assert all(type(v) is int for v in seg.crop_region) and 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 256
    assert np.allclose(seg.bbox, found.faces[0].box.numpy()) and seg.bbox.dtype == np.float32
    assert abs(float(seg.confidence) - found.faces[0].score) < 1e-6
    # cropped_image: exactly the crop region's pixels (SEGS Paste writes it back at crop_region)
    assert seg.cropped_image.shape == (1, y1 - y0, x1 - x0, 3)
    assert seg.cropped_image.data_ptr() == photo[:, y0:y1, x0:x1].data_ptr()  # a view, as Impact's
    pasted = torch.zeros_like(photo)
    pasted[:, y0:y1, x0:x1] = seg.cropped_image[0]
    assert torch.equal(pasted[:, y0:y1, x0:x1], photo[:, y0:y1, x0:x1])
    # cropped_mask: numpy float32 of the crop's size (SEGS to MASK calls .astype on it), 1 on the box
    assert isinstance(seg.cropped_mask, np.ndarray) and seg.cropped_mask.dtype == np.float32
    assert seg.cropped_mask.shape == (y1 - y0, x1 - x0)
    combined = np.zeros((256, 320), dtype=np.uint8)
    combined[y0:y1, x0:x1] |= (seg.cropped_mask * 255).astype(np.uint8)
    bx0, by0, bx1, by1 = (round(float(v)) for v in seg.bbox)
    assert combined[by0:by1, bx0:bx1].min() == 255 and combined.sum() == 255 * (by1 - by0) * (bx1 - bx0)


def test_faces_round_trip_through_segs(mtcnn, photo, found):
    back = segs_to_faces(mtcnn, photo, faces_to_segs(photo, found))
    assert len(back) == 1 and back.notes == ()
    assert nme(found.faces[0].landmarks, back.faces[0].landmarks) < LANDMARK_TOLERANCE
    assert torch.allclose(back.faces[0].box, found.faces[0].box)  # the SEG's box is kept
    assert "SEGS, landmarks by MTCNN" in back.detector


def test_segs_built_as_impact_builds_them_become_faces(mtcnn, photo, found):
    # a YOLO face box is looser than MTCNN's; a second box on the empty canvas holds no face
    x0, y0, x1, y1 = found.faces[0].box.tolist()
    pad = 0.15 * (x1 - x0)
    segs = impact_segs(photo, [(x0 - pad, y0 - 2 * pad, x1 + pad, y1 + pad), (2.0, 200.0, 38.0, 250.0)])
    faces = segs_to_faces(mtcnn, photo, segs)
    assert len(faces) == 1
    assert nme(found.faces[0].landmarks, faces.faces[0].landmarks) < LANDMARK_TOLERANCE
    assert faces.notes == ("no face found by MTCNN (facenet-pytorch) inside box(es) 1 of 2",)
    # SEGS of an image twice the size: the boxes are scaled to the image, as Impact's consumers do
    small = ((128, 160), [s._replace(bbox=s.bbox / 2) for s in segs[1][:1]])
    assert nme(found.faces[0].landmarks, segs_to_faces(mtcnn, photo, small).faces[0].landmarks) < LANDMARK_TOLERANCE


def test_impacts_own_seg_class_is_used_when_impact_is_loaded(monkeypatch, photo, found):
    impact_seg = namedtuple("SEG", SEG_FIELDS, defaults=[None])
    module = types.ModuleType("impact.core")
    module.SEG = impact_seg
    monkeypatch.setitem(sys.modules, "impact.core", module)
    assert seg_class() is impact_seg
    assert type(faces_to_segs(photo, found)[1][0]) is impact_seg
    monkeypatch.delitem(sys.modules, "impact.core")
    assert seg_class() is not impact_seg


def test_wrong_inputs_get_one_clear_error(photo, found):
    with pytest.raises(ValueError, match=r"segs: expected Impact Pack SEGS \(\(height, width\), \[SEG, \.\.\.\]\)"):
        check_segs(torch.zeros(3))
    with pytest.raises(ValueError, match="SEGS describe one image"):
        faces_to_segs(photo.expand(2, -1, -1, -1), found)
    with pytest.raises(ValueError, match="crop_factor must be at least 1"):
        faces_to_segs(photo, found, crop_factor=0.5)
    with pytest.raises(TypeError, match="detector: expected a face detector from Load Face Detector or an Impact"):
        as_face_detector(object())


class StandInBBoxDetector:
    """Impact's BBOX_DETECTOR interface (detect, detect_combined, setAux) around fixed boxes: what a
    YOLO face model returns, without YOLO. Records how it was called."""

    def __init__(self, boxes):
        self.boxes, self.calls = boxes, []

    def detect(self, image, threshold, dilation, crop_factor, drop_size=1, detailer_hook=None):
        self.calls.append((tuple(image.shape), image.device.type, threshold, dilation, crop_factor, drop_size))
        return impact_segs(image, self.boxes, crop_factor)

    def detect_combined(self, image, threshold, dilation):
        return None

    def setAux(self, x):
        pass


def test_a_bbox_detector_finds_boxes_and_the_pack_finds_landmarks(mtcnn, photo, found):
    x0, y0, x1, y1 = found.faces[0].box.tolist()
    stand_in = StandInBBoxDetector([(x0 - 5, y0 - 10, x1 + 5, y1 + 5)])
    detector = as_face_detector(stand_in)
    assert isinstance(detector, BoxDetector)
    faces = find_faces(detector, photo, FaceSelection(min_score=0.9))
    assert stand_in.calls == [((1, 256, 320, 3), "cpu", 0.5, 0, 1.0, 1)]
    assert len(faces) == 1 and faces.detector.startswith("BBOX_DETECTOR (StandInBBoxDetector), landmarks by MTCNN")
    assert nme(found.faces[0].landmarks, faces.faces[0].landmarks) < LANDMARK_TOLERANCE
