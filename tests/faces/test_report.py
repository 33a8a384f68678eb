"""The restore report says each thing once: which images kept no face (one line), and per image at
most one note on why, never a second "no face found" in other words. Real MTCNN on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.detection import image_batch
from helpers.models import random_restoreformer

from restoreformer_node.faces.detection import FaceSelection, find_faces, load_detector
from restoreformer_node.faces.pipeline import restore_faces


@pytest.fixture(scope="module")
def mtcnn():
    return load_detector("mtcnn")


@pytest.fixture(scope="module")
def network():
    return random_restoreformer()


def report_lines(images, network, detector, selection=None) -> list[str]:
    faces = find_faces(detector, images, selection)
    return restore_faces(images, network, faces).report.lines()


def no_face_photo(astronaut: np.ndarray) -> torch.Tensor:
    """The astronaut's lower right corner (flag and sky, no face), at the size of the full photo."""
    corner = torch.from_numpy(np.ascontiguousarray(astronaut[320:, 300:])).permute(2, 0, 1)[None].float()
    return torch.nn.functional.interpolate(corner, size=astronaut.shape[:2]).permute(0, 2, 3, 1) / 255


def test_index_not_found_is_told_once_per_image(astronaut, mtcnn, network, one_thread):
    images = torch.cat([image_batch(astronaut), no_face_photo(astronaut)])
    lines = report_lines(images, network, mtcnn, FaceSelection(mode="by index", indices=(3,)))
    assert lines == [
        "restored 0 faces in 2 images",
        f"no face found by {mtcnn.name} in any of the 2 images: passed through unchanged",
        "image 0: face index 3 not found (1 face)",
    ]


def test_image_too_small_to_search_says_no_face_once(mtcnn, network, one_thread):
    lines = report_lines(torch.rand(1, 12, 12, 3), network, mtcnn)
    assert lines == [
        "restored 0 faces in image",
        f"no face found by {mtcnn.name} in the image: passed through unchanged",
        "image 12x12 is smaller than 20 px on a side: too small to search for faces",
    ]
    assert sum("no face" in line for line in lines) == 1


def test_faces_filtered_out_are_one_note(astronaut, mtcnn, network, one_thread):
    lines = report_lines(image_batch(astronaut), network, mtcnn, FaceSelection(min_size=10_000))
    assert lines[1:] == [
        f"no face found by {mtcnn.name} in the image: passed through unchanged",
        "1 face found, none passed the minimum score and size",
    ]
