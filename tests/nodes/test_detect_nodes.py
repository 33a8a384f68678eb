"""The detection nodes run through ComfyUI's own modules (folder_paths, model_management, utils):
tiny, RGBA, gray, no-face and multi-face inputs, the detector folder and its messages."""

from __future__ import annotations

import os

import pytest
import torch
from helpers.comfy_host import import_comfy
from helpers.detection import collage, image_batch, network_blocked, write_retinaface_weights

DETECT = "RestoreFormerDetectFaces"
LOAD = "RestoreFormerLoadFaceDetector"


@pytest.fixture(scope="module")
def comfy():
    """ComfyUI's modules (CPU mode) and the pack's node mappings as ComfyUI would load them."""
    with network_blocked():
        import_comfy()
        import comfy.model_management
        import folder_paths

        from restoreformer_node.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

        yield {
            "folder_paths": folder_paths,
            "device": comfy.model_management.get_torch_device(),
            "nodes": NODE_CLASS_MAPPINGS,
            "names": NODE_DISPLAY_NAME_MAPPINGS,
        }


@pytest.fixture
def detection_folder(comfy, tmp_path, monkeypatch):
    """A temporary `facedetection` folder registered with ComfyUI for one test only."""
    folder_paths = comfy["folder_paths"]
    folder = tmp_path / "facedetection"
    folder.mkdir()
    paths, extensions = folder_paths.folder_names_and_paths["facedetection"]
    monkeypatch.setitem(
        folder_paths.folder_names_and_paths, "facedetection", ([*paths, str(folder)], extensions)
    )
    return folder


def detect(
    comfy,
    images,
    select="all",
    face_index="0",
    order="left to right",
    min_size=0,
    min_score=0.95,
    max_side=1280,
    detector=None,
):
    node = comfy["nodes"][DETECT]()
    with network_blocked():
        faces, preview, count, summary = getattr(node, node.FUNCTION)(
            images, select, face_index, order, min_size, min_score, max_side, detector=detector
        )
    assert preview.shape == (*images.shape[:3], 3) and preview.device.type == "cpu"
    assert count == len(faces) and faces.batch_size == images.shape[0]
    return faces, preview, count, summary


@pytest.fixture(scope="module")
def half_collage(astronaut):
    """[1, 512, 512, 3]: four astronaut faces of ~27 to ~55 px."""
    image = collage(astronaut).permute(0, 3, 1, 2)
    return torch.nn.functional.interpolate(image, size=512, mode="area").permute(0, 2, 3, 1)


def test_nodes_are_registered_with_their_types(comfy):
    """(Tooltips and help pages of every node: tests/nodes/test_registry_hygiene.py.)"""
    assert {LOAD, DETECT} <= set(comfy["names"])
    assert comfy["nodes"][DETECT].RETURN_TYPES == ("RF_FACES", "IMAGE", "INT", "STRING")
    assert comfy["nodes"][LOAD].RETURN_TYPES == ("RF_FACE_DETECTOR",)


def test_facedetection_folder_is_registered_for_model_files(comfy):
    folder_paths = comfy["folder_paths"]
    paths, extensions = folder_paths.folder_names_and_paths["facedetection"]
    assert os.path.join(folder_paths.models_dir, "facedetection") in paths
    assert ".pth" in extensions and ".safetensors" in extensions


def test_missing_retinaface_file_is_explained(comfy):
    node = comfy["nodes"][LOAD]()
    with pytest.raises(FileNotFoundError) as error:
        node.load("retinaface_resnet50")
    message = str(error.value)
    assert "detection_Resnet50_Final.pth" in message
    for folder in comfy["folder_paths"].get_folder_paths("facedetection"):
        assert folder in message
    assert (
        "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth" in message
    )


def test_loader_reads_the_folder_and_a_changed_choice_applies_at_once(comfy, detection_folder, astronaut):
    write_retinaface_weights(detection_folder, "retinaface_mobilenet0.25", heads="priors")
    node = comfy["nodes"][LOAD]()
    with network_blocked():
        (retina,) = node.load("retinaface_mobilenet0.25")
        (mtcnn,) = node.load("mtcnn")
    assert retina.kind == "retinaface_mobilenet0.25" and mtcnn.kind == "mtcnn"
    assert retina.device == torch.device(comfy["device"])
    image = torch.nn.functional.interpolate(image_batch(astronaut).permute(0, 3, 1, 2), size=128)
    image = image.permute(0, 2, 3, 1)
    from_retina = detect(comfy, image, min_score=0.0, detector=retina)[0]
    from_mtcnn = detect(comfy, image, min_score=0.0, detector=mtcnn)[0]
    assert "RetinaFace" in from_retina.detector and "MTCNN" in from_mtcnn.detector
    assert len(from_retina) > len(from_mtcnn)  # the prior-emitting test network fires everywhere
    # ComfyUI re-runs the loader when IS_CHANGED changes: a replaced file changes it.
    cls = comfy["nodes"][LOAD]
    before = cls.IS_CHANGED("retinaface_mobilenet0.25")
    path = write_retinaface_weights(detection_folder, "retinaface_mobilenet0.25", seed=3)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cls.IS_CHANGED("retinaface_mobilenet0.25") != before
    assert cls.IS_CHANGED("mtcnn") == "mtcnn" and cls.IS_CHANGED("retinaface_resnet50") == "missing"
    with network_blocked():
        assert node.load("retinaface_mobilenet0.25")[0] is not retina


@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (2, 8, 8, 3), (1, 8, 8, 4), (1, 8, 8, 1)])
def test_tiny_images_pass_with_no_face(comfy, shape):
    faces, preview, count, summary = detect(comfy, torch.rand(shape))
    assert count == 0 and summary.startswith("no face found")
    assert "smaller than 20 px" in summary


def test_flat_image_says_no_face(comfy):
    images = torch.full((1, 300, 200, 3), 0.5)
    faces, preview, count, summary = detect(comfy, images)
    assert count == 0
    assert summary == "no face found in image (200x300) by MTCNN (facenet-pytorch)"
    assert torch.equal(preview, images)  # nothing drawn


def test_rgba_and_gray_inputs(comfy, astronaut):
    rgb = image_batch(astronaut)
    rgba = torch.cat([rgb, torch.zeros_like(rgb[..., :1])], dim=-1)
    gray = rgb.mean(-1, keepdim=True)
    results = [detect(comfy, image) for image in (rgba, gray.expand(-1, -1, -1, 3), gray)]
    for _faces, _preview, count, summary in results:
        assert count == 1, summary
        assert summary.startswith("1 face in image (512x512)")
    # The gray-like and the 1-channel gray image are the same picture to the detector: as_rgb
    # expands the one channel, so the same values in the same layout reach the same kernels.
    assert torch.equal(results[1][0].faces[0].landmarks, results[2][0].faces[0].landmarks)
    assert torch.equal(results[1][1], results[2][1])


def test_multi_face_batch_selection(comfy, half_collage):
    batch = torch.cat([half_collage, half_collage.flip(2)])
    faces, preview, count, summary = detect(comfy, batch)
    assert count == 8 and [f.image_index for f in faces.faces] == [0] * 4 + [1] * 4
    assert summary.startswith("8 faces in 2 images (512x512)")
    assert "image 1 face 3:" in summary
    picked = detect(comfy, batch, select="by index", face_index="0, 2")[0]
    assert len(picked) == 4
    for image_index in (0, 1):
        everything = faces.for_image(image_index)
        chosen = picked.for_image(image_index)
        assert [f.box.tolist() for f in chosen] == [everything[0].box.tolist(), everything[2].box.tolist()]
    # Each image alone from here (cheaper): the same faces as in the batch.
    largest = detect(comfy, half_collage, select="largest")[0]
    assert len(largest) == 1
    assert largest.faces[0].size == max(f.size for f in faces.for_image(0))
    big_only = detect(comfy, half_collage, min_size=45)[0]
    assert 0 < len(big_only) < 4 and all(f.size >= 45 for f in big_only.faces)
    missing = detect(comfy, batch[1:], select="by index", face_index="5")
    assert missing[2] == 0 and "face index 5 not found (4 faces)" in missing[3]
    # The preview changes pixels only around the faces found.
    changed = (preview != batch).any(-1)
    assert changed[0].any() and changed[1].any()
    assert not changed[:, 300:, 230:280].any()  # between the lower tiles: nothing drawn


def test_bad_face_index_is_named(comfy, half_collage):
    with pytest.raises(ValueError, match="face index list 'first'"):
        detect(comfy, half_collage, select="by index", face_index="first")
