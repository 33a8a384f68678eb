"""Face detection: MTCNN on real photos, RetinaFace on weight files the tests write, selection,
ordering, the FACES value and the preview. Nothing here reaches the network."""

from __future__ import annotations

import os

import pytest
import torch
from helpers.detection import collage, image_batch, network_blocked, write_retinaface_weights

from restoreformer_node.faces.detection import (
    DETECTORS,
    MIN_IMAGE_SIDE,
    Detection,
    DetectorWeightsMissing,
    FaceSelection,
    build_faces,
    find_faces,
    load_detector,
    order_faces,
    parse_indices,
    select_faces,
    summarize,
)
from restoreformer_node.faces.preview import BOX_COLOUR, LANDMARK_COLOURS, draw_detections, draw_faces
from restoreformer_node.faces.template import template_points


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Nothing in this module may reach the network (detectors build from local files only)."""
    with network_blocked():
        yield


@pytest.fixture(scope="module")
def small_astronaut(astronaut) -> torch.Tensor:
    """[1, 256, 256, 3]: the astronaut at half size (face ~55 px), for the cheaper checks."""
    image = image_batch(astronaut).permute(0, 3, 1, 2)
    return torch.nn.functional.interpolate(image, size=(256, 256), mode="area").permute(0, 2, 3, 1)


@pytest.fixture(scope="module")
def small_reference(mtcnn, small_astronaut) -> Detection:
    found = mtcnn.detect(small_astronaut)[0]
    assert len(found) == 1
    return found


@pytest.fixture(scope="module")
def collage_image(astronaut):
    return collage(astronaut)


@pytest.fixture(scope="module")
def collage_found(mtcnn, collage_image) -> Detection:
    """MTCNN's raw detections on the 4-face collage (computed once)."""
    return mtcnn.detect(collage_image)[0]


def assert_plausible_face(box: torch.Tensor, landmarks: torch.Tensor) -> None:
    x0, y0, x1, y1 = box.tolist()
    assert x1 - x0 > 20 and y1 - y0 > 20
    assert ((landmarks[:, 0] > x0) & (landmarks[:, 0] < x1)).all(), (box, landmarks)
    assert ((landmarks[:, 1] > y0) & (landmarks[:, 1] < y1)).all(), (box, landmarks)
    left_eye, right_eye, nose, left_mouth, right_mouth = landmarks.tolist()
    assert left_eye[0] < right_eye[0]  # image left first, as the template
    assert left_mouth[0] < right_mouth[0]
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def template_residual(face) -> float:
    """Largest distance (crop pixels) between the face's warped landmarks and the template."""
    points = torch.cat([face.landmarks.double(), torch.ones(5, 1, dtype=torch.float64)], dim=1)
    warped = points @ face.affine.T
    return float((warped - template_points(512)).norm(dim=1).max())


# ---------------------------------------------------------------------------------------- MTCNN


@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_mtcnn_finds_the_one_face_with_landmarks_in_template_order(mtcnn, photo, request):
    image = image_batch(request.getfixturevalue(photo))
    faces = find_faces(mtcnn, image)
    assert len(faces) == 1, summarize(faces)
    face = faces.faces[0]
    # Detector criteria (confidence, crop pixels) on real photos: properties of the published
    # MTCNN weights, which float rounding moves by orders of magnitude less.
    assert face.image_index == 0 and face.score > 0.99
    assert_plausible_face(face.box, face.landmarks)
    # The similarity fit to the template is tight for a frontal face (a few crop pixels).
    assert template_residual(face) < 20
    assert face.affine.dtype == torch.float64 and face.affine.shape == (2, 3)
    assert (faces.batch_size, faces.image_height, faces.image_width) == (1, *image.shape[1:3])


def test_mtcnn_batch_equals_single_images_and_mirroring_keeps_image_left_first(
    mtcnn, small_astronaut, small_reference
):
    image = small_astronaut
    mirrored = image.flip(2)
    batch = mtcnn.detect(torch.cat([image, mirrored]))
    single = [small_reference, mtcnn.detect(mirrored)[0]]
    for got, want in zip(batch, single):
        assert len(got) == len(want) == 1
        # Batching changes only the kernels' rounding: landmarks are box + width x regression, and
        # O(1) regressions through three small CNNs keep float32 rounding far below 1e-5 relative;
        # times boxes of ~100 px that is under 1e-3 px.
        torch.testing.assert_close(got.landmarks, want.landmarks, atol=1e-3, rtol=0)
    # In the mirror the person's right eye is on the image's left: the order follows the image.
    width = image.shape[2]
    original, flipped = batch[0].landmarks[0], batch[1].landmarks[0]
    assert_plausible_face(batch[1].boxes[0], flipped)
    mirrored_back = flipped.clone()
    mirrored_back[:, 0] = width - 1 - flipped[:, 0]
    swap = [1, 0, 2, 4, 3]  # left/right eye and mouth corners trade places under a mirror
    # A detector criterion: MTCNN is not mirror-symmetric, so the mirror's landmarks are another
    # answer, held to 3 px; float rounding is orders of magnitude below that.
    assert (mirrored_back[swap] - original).abs().max() < 3.0


def test_large_image_is_searched_on_a_copy_and_mapped_back(mtcnn, small_astronaut, small_reference):
    image = small_astronaut.permute(0, 3, 1, 2)
    big = torch.nn.functional.interpolate(image, scale_factor=3, mode="bicubic")
    big = big.clamp(0, 1).permute(0, 2, 3, 1)  # 768 x 768
    faces = find_faces(mtcnn, big, max_side=256)
    assert len(faces) == 1
    assert any("256x256 copy of the 768x768" in note for note in faces.notes)
    # Pixel centres map as x_big = 3 * x + 1 between a 256 and a 768 image. The copy is not
    # bit-identical to the 256 original (bicubic up, antialiased down): allow 1 px of the copy.
    expected = small_reference.landmarks[0] * 3 + 1
    assert (faces.faces[0].landmarks - expected).abs().max() < 3.0
    assert (faces.faces[0].box - (small_reference.boxes[0] * 3 + 1)).abs().max() < 6.0


def test_8k_frame_finds_the_face(mtcnn, astronaut):
    canvas = torch.full((1, 4320, 7680, 3), 0.5)
    photo = image_batch(astronaut)
    big = torch.nn.functional.interpolate(photo.permute(0, 3, 1, 2), scale_factor=4, mode="bilinear")
    canvas[:, 1000:3048, 3000:5048] = big.permute(0, 2, 3, 1)
    faces = find_faces(mtcnn, canvas)
    assert len(faces) == 1
    assert_plausible_face(faces.faces[0].box, faces.faces[0].landmarks)
    reference = mtcnn.detect(photo)[0].landmarks[0]
    expected = (reference + 0.5) * 4 - 0.5 + torch.tensor([3000.0, 1000.0])
    assert (faces.faces[0].landmarks - expected).abs().max() < 12  # 1/6 scale copy: ~2 px there


@pytest.mark.parametrize(
    "shape", [(1, 1, 1, 3), (1, 16, 16, 3), (2, 8, 8, 4), (1, 19, 400, 1), (1, 16, 16, 2)]
)
def test_tiny_images_give_no_faces(mtcnn, shape):
    images = torch.rand(shape)
    found = mtcnn.detect(images)
    assert len(found) == shape[0] and all(len(f) == 0 for f in found)
    faces = find_faces(mtcnn, images)
    assert len(faces) == 0 and faces.batch_size == shape[0]
    assert any(f"smaller than {MIN_IMAGE_SIDE} px" in note for note in faces.notes)
    assert summarize(faces).startswith("no face found")


def test_rgba_and_gray_find_the_same_face(mtcnn, small_astronaut, small_reference):
    rgb = small_astronaut
    rgba = torch.cat([rgb, torch.rand_like(rgb[..., :1])], dim=-1)
    gray = (rgb * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    reference = small_reference
    found_rgba = mtcnn.detect(rgba)[0]
    # Alpha is dropped before anything else: the same colour values reach the same kernels.
    assert torch.equal(found_rgba.landmarks, reference.landmarks)
    for gray_input in (gray, gray.expand(-1, -1, -1, 3), torch.cat([gray, gray], dim=-1)):
        found = mtcnn.detect(gray_input)[0]
        assert len(found) == 1
        # Another picture (gray), so another answer: a detector criterion in pixels.
        assert (found.landmarks - reference.landmarks).abs().max() < 3


def test_flat_image_has_no_face(mtcnn):
    faces = find_faces(mtcnn, torch.full((2, 256, 320, 3), 0.4))
    assert len(faces) == 0
    assert faces.images_without_faces == (0, 1) and faces.notes == ()
    assert summarize(faces).splitlines() == ["no face found in 2 images (320x256) by MTCNN (facenet-pytorch)"]


def test_bad_image_shapes_are_named(mtcnn):
    with pytest.raises(ValueError, match=r"\[B,H,W,C\] with 1 to 4 channels.*\(1, 3, 64, 64\)"):
        mtcnn.detect(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="max_side must be at least"):
        mtcnn.detect(torch.rand(1, 64, 64, 3), max_side=8)


# -------------------------------------------------------------------------- selection and order


def test_collage_faces_are_all_found_left_to_right(collage_found):
    ordered = order_faces(collage_found, "left to right")
    assert len(ordered) == 4
    centres = ((ordered.boxes[:, 0] + ordered.boxes[:, 2]) / 2).tolist()
    assert centres == sorted(centres)
    for box, landmarks in zip(ordered.boxes, ordered.landmarks):
        assert_plausible_face(box, landmarks)
    # Sizes follow the tile scales 1 : 0.75 : 0.5 : 0.625 of the ~110 px original.
    sizes = sorted(ordered.sizes().tolist())
    assert [round(s / sizes[-1], 1) for s in sizes] == pytest.approx([0.5, 0.6, 0.7, 1.0], abs=0.11)


def test_largest_first_order_and_largest_selection(collage_found):
    ordered = order_faces(collage_found, "largest first")
    sizes = ordered.sizes().tolist()
    assert sizes == sorted(sizes, reverse=True)
    chosen = select_faces(collage_found, FaceSelection(mode="largest", order="left to right"))
    assert len(chosen.kept()) == 1
    assert float(chosen.kept().sizes()[0]) == max(sizes)
    assert chosen.ordered.boxes.shape == (4, 4)  # the candidates stay available for the preview


def test_index_list_picks_positions_in_the_chosen_order(collage_found):
    left_to_right = order_faces(collage_found, "left to right")
    # Selection only indexes the same detections: the same values.
    picked = select_faces(collage_found, FaceSelection(mode="by index", indices=(2, 0))).kept()
    assert torch.equal(picked.boxes, left_to_right.boxes[[2, 0]])
    last = select_faces(collage_found, FaceSelection(mode="by index", indices=(-1,))).kept()
    assert torch.equal(last.boxes, left_to_right.boxes[[3]])
    largest_first = order_faces(collage_found, "largest first")
    second = select_faces(collage_found, FaceSelection("by index", (1,), order="largest first")).kept()
    assert torch.equal(second.boxes, largest_first.boxes[[1]])
    missing = select_faces(collage_found, FaceSelection(mode="by index", indices=(1, 7)))
    assert len(missing.kept()) == 1 and missing.notes == ("face index 7 not found (4 faces)",)


def test_min_size_keeps_only_big_enough_faces(collage_found):
    sizes = collage_found.sizes()
    threshold = float(sizes.sort().values[1:3].mean())  # between the 2nd and 3rd smallest
    kept = select_faces(collage_found, FaceSelection(min_size=threshold)).kept()
    assert len(kept) == 2 and bool((kept.sizes() >= threshold).all())
    nothing = select_faces(collage_found, FaceSelection(min_size=10_000))
    assert len(nothing.kept()) == 0 and nothing.notes == ("4 faces found, none passed the minimum score and size",)


def test_min_score_filters_before_indexing():
    # Three detections with known scores (left to right): index 0 must mean the first that passes.
    boxes = torch.tensor([[0.0, 0, 40, 40], [50, 0, 100, 50], [120, 0, 150, 30]])
    found = Detection(boxes, torch.rand(3, 5, 2) * 30, torch.tensor([0.5, 0.97, 0.99]))
    # Scores are float32 (0.97 reads back as 0.97000003): approx's default 1e-6 relative is
    # 16x float32's rounding.
    assert select_faces(found, FaceSelection(min_score=0.9)).kept().scores.tolist() == pytest.approx(
        [0.97, 0.99]
    )
    first = select_faces(found, FaceSelection("by index", (0,), min_score=0.98)).kept()
    assert first.scores.tolist() == pytest.approx([0.99])


def test_parse_indices():
    assert parse_indices("0,2") == (0, 2)
    assert parse_indices(" 1-3, 0 ;-1") == (1, 2, 3, 0, -1)
    assert parse_indices("2,2,0") == (2, 0)
    assert parse_indices("") == ()
    for bad in ("a", "3-1", "1.5", "-2-3"):
        with pytest.raises(ValueError, match="face index list"):
            parse_indices(bad)
    with pytest.raises(ValueError, match="needs at least one face index"):
        FaceSelection(mode="by index")
    with pytest.raises(ValueError, match="choose one of"):
        FaceSelection(order="top to bottom")


def test_faces_of_a_batch_carry_their_image_index_and_affine(mtcnn, collage_image):
    # A batch of the collage at half size (faces of 27-55 px) and its mirror.
    half = torch.nn.functional.interpolate(collage_image.permute(0, 3, 1, 2), size=512, mode="area")
    half = half.permute(0, 2, 3, 1)
    batch = torch.cat([half, half.flip(2)])
    faces = find_faces(mtcnn, batch, FaceSelection(order="largest first"))
    assert [f.image_index for f in faces.faces] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [f.size for f in faces.for_image(0)] == sorted((f.size for f in faces.for_image(0)), reverse=True)
    assert faces.affines().shape == (8, 2, 3)
    for face in faces.faces:
        assert template_residual(face) < 20  # crop pixels (x6 for these small faces)
    # The mirror's faces are the same faces: same sizes in the same (largest first) order.
    sizes = [[f.size for f in faces.for_image(i)] for i in (0, 1)]
    assert sizes[0] == pytest.approx(sizes[1], rel=0.2)  # MTCNN boxes of 30-55 px faces vary
    # build_faces on an image without faces gives none for it and keeps the batch size.
    partial = build_faces([Detection.empty(), mtcnn.detect(batch[1:])[0]], 512, 512, "MTCNN")
    assert [f.image_index for f in partial.faces] == [1, 1, 1, 1] and partial.batch_size == 2


# -------------------------------------------------------------------------------------- preview


def test_preview_draws_boxes_and_coloured_landmarks_only_near_faces(collage_found, collage_image):
    per_image = [select_faces(collage_found, FaceSelection("by index", (0,)))]
    faces = build_faces([per_image[0].kept()], 1024, 1024)
    before = collage_image.clone()
    preview = draw_detections(collage_image, [(s.ordered, s.chosen) for s in per_image])
    assert torch.equal(collage_image, before)  # the input is not drawn on
    assert preview.shape == collage_image.shape and preview.dtype == torch.float32
    chosen = faces.faces[0]
    for (x, y), colour in zip(chosen.landmarks.tolist(), LANDMARK_COLOURS):
        pixel = preview[0, round(y), round(x)]
        assert torch.equal(pixel, torch.tensor(colour))  # drawn opaque: the colour itself
    x0, y0, x1, y1 = (round(v) for v in chosen.box.tolist())
    assert torch.equal(preview[0, (y0 + y1) // 2, x0], torch.tensor(BOX_COLOUR))
    # Unchosen faces are drawn in grey (no landmarks); far from every face nothing changes.
    changed = (preview != collage_image).any(-1)[0]
    near = torch.zeros_like(changed)
    for box in per_image[0].ordered.boxes.tolist():
        bx0, by0, bx1, by1 = (round(v) for v in box)
        near[max(0, by0 - 30) : by1 + 10, max(0, bx0 - 10) : bx1 + 60] = True
    assert changed.any() and not (changed & ~near).any()


def test_preview_of_faces_value_handles_rgba_gray_and_empty(small_astronaut, small_reference):
    rgb = small_astronaut
    faces = build_faces([small_reference], 256, 256)
    drawn = draw_faces(rgb, faces)
    gray = rgb.mean(-1, keepdim=True)
    for image, as_rgb in (
        (torch.cat([rgb, torch.ones_like(rgb[..., :1])], -1), rgb),
        (gray, gray.expand(-1, -1, -1, 3)),
        (torch.cat([gray, torch.ones_like(gray)], -1), gray.expand(-1, -1, -1, 3)),
    ):
        out = draw_faces(image, faces)
        assert out.shape == (1, 256, 256, 3)
        # Drawn at the same places as on the RGB image; elsewhere the colour version of the input.
        changed = (out != as_rgb).any(-1)
        assert torch.equal(changed, (drawn != rgb).any(-1))
    empty = draw_faces(rgb, build_faces([Detection.empty()], 256, 256))
    assert torch.equal(empty, rgb)


# ----------------------------------------------------------------------------------- RetinaFace


RETINAFACE_KINDS = [k for k in DETECTORS if k.startswith("retinaface")]


@pytest.mark.parametrize("kind", RETINAFACE_KINDS)
def test_retinaface_builds_from_a_written_file_and_decodes_priors(kind, tmp_path, astronaut):
    """facexlib's network with a random backbone (the published weights cannot be had offline),
    class heads biased to "face" and box/landmark heads zeroed: on a photo every detection must be
    one of facexlib's priors (16..512 px squares) with all 5 landmarks at its centre. This checks
    the weight loading, the pre-processing path, the decoding and the mapping back from a
    downscaled copy; the random backbone makes anything beyond shapes and ranges meaningless."""
    path = write_retinaface_weights(tmp_path / "facedetection", kind, heads="priors")
    detector = load_detector(kind, path)
    assert detector.kind == kind
    photo = image_batch(astronaut).permute(0, 3, 1, 2)
    image = torch.nn.functional.interpolate(photo, size=(96, 128), mode="area").permute(0, 2, 3, 1)
    for max_side, scale in ((128, 1.0), (64, 2.0)):
        found = detector.detect(image.repeat(2, 1, 1, 1), max_side=max_side)
        assert len(found) == 2
        # Zeroed box heads: every box is its prior exactly, whatever the backbone computes.
        assert torch.equal(found[0].boxes, found[1].boxes)
        f = found[0]
        n = len(f)
        assert n > 0
        assert f.boxes.shape == (n, 4) and f.landmarks.shape == (n, 5, 2) and f.scores.shape == (n,)
        assert f.boxes.dtype == f.landmarks.dtype == f.scores.dtype == torch.float32
        assert bool(((f.scores >= detector.score_threshold) & (f.scores <= 1)).all())
        widths = (f.boxes[:, 2] - f.boxes[:, 0]) / scale
        heights = (f.boxes[:, 3] - f.boxes[:, 1]) / scale
        allowed = torch.tensor([16.0, 32, 64, 128, 256, 512])
        # Exact in exact arithmetic: box corners and landmarks are float32 coordinates of priors
        # (up to 2 x 512 px with the prior overhanging), each a few roundings off, so sizes and
        # centres are within a few ulps of 1024 px.
        coords = 8 * torch.finfo(torch.float32).eps * 1024
        assert bool(((widths[:, None] - allowed).abs().min(1).values <= coords).all())
        assert (widths - heights).abs().max() <= coords
        centres = (f.boxes[:, :2] + f.boxes[:, 2:]) / 2
        assert (f.landmarks - centres[:, None]).abs().max() <= coords


def test_missing_retinaface_file_names_file_folder_and_source(tmp_path):
    folder = tmp_path / "facedetection"
    for kind, file_name in (
        ("retinaface_resnet50", "detection_Resnet50_Final.pth"),
        ("retinaface_mobilenet0.25", "detection_mobilenet0.25_Final.pth"),
    ):
        with pytest.raises(DetectorWeightsMissing) as error:
            load_detector(kind, folder / file_name)
        message = str(error.value)
        assert file_name in message and str(folder) in message
        assert "github.com/xinntao/facexlib/releases" in message and "v0.1.0" in message


def test_wrong_retinaface_file_is_refused_by_key_names(tmp_path):
    mobile = write_retinaface_weights(tmp_path / "a", "retinaface_mobilenet0.25")
    wrong = tmp_path / "b" / "detection_Resnet50_Final.pth"
    wrong.parent.mkdir()
    os.link(mobile, wrong)
    with pytest.raises(ValueError, match=r"does not fit RetinaFace resnet50.*missing keys \['body\."):
        load_detector("retinaface_resnet50", wrong)


def test_detectors_are_cached_and_a_replaced_file_is_reloaded(tmp_path):
    kind = "retinaface_mobilenet0.25"
    path = write_retinaface_weights(tmp_path / "facedetection", kind, seed=1)
    first = load_detector(kind, path)
    assert load_detector(kind, path) is first
    assert load_detector("mtcnn") is load_detector("mtcnn")
    assert load_detector("mtcnn") is not first
    write_retinaface_weights(tmp_path / "facedetection", kind, seed=2)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = load_detector(kind, path)
    assert second is not first
    changed = [
        not torch.equal(a, b)
        for a, b in zip(first.net.state_dict().values(), second.net.state_dict().values())
    ]
    assert any(changed)
