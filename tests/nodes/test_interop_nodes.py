"""The Impact Pack, spandrel and face-parsing interop of the nodes, run through ComfyUI's own
modules in CPU mode: models loaded by ComfyUI's core Load Upscale Model node from files the tests
write (random weights of real architectures: pretrained files cannot be had offline), SEGS and a
stand-in BBOX_DETECTOR with Impact's interface, face parsers from models/facedetection."""

from __future__ import annotations

import pytest
import torch
from helpers.comfy_host import import_comfy
from helpers.detection import image_batch
from helpers.models import random_restoreformer
from helpers.pipeline import landmarks_at, make_faces
from helpers.spandrel_models import write_compact

import_comfy()

import folder_paths  # noqa: E402
from comfy_extras.nodes_upscale_model import UpscaleModelLoader  # noqa: E402

from restoreformer_node.faces.parsing import FaceParsing  # noqa: E402
from restoreformer_node.model import RESTOREFORMER, tiny_config  # noqa: E402
from restoreformer_node.nodes.detect_nodes import DetectFaces  # noqa: E402
from restoreformer_node.nodes.model_nodes import MODEL_FOLDER, LoadModel  # noqa: E402
from restoreformer_node.nodes.parsing_nodes import LoadFaceParser  # noqa: E402
from restoreformer_node.nodes.restore_nodes import PasteFaces, RestoreFaces  # noqa: E402
from restoreformer_node.nodes.segs_nodes import FacesToSEGS, SEGSToFaces  # noqa: E402
from restoreformer_node.weights import save_restoreformer  # noqa: E402

# A RestoreFormer spandrel's loader accepts (it assumes 512 px and attention at 16 px: six levels),
# kept narrow so it runs on a CPU in seconds.
SPANDREL_SHAPED = dict(resolution=512, ch=32, ch_mult=(1, 1, 1, 1, 1, 1))


def _use_folder(name: str, folder) -> None:
    folder_paths.folder_names_and_paths[name] = ([str(folder)], folder_paths.supported_pt_extensions)
    if hasattr(folder_paths, "filename_list_cache"):
        folder_paths.filename_list_cache.clear()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    saved = {k: folder_paths.folder_names_and_paths.get(k) for k in ("upscale_models", MODEL_FOLDER, "facedetection")}
    upscale = tmp_path_factory.mktemp("upscale_models")
    restore = tmp_path_factory.mktemp("facerestore_models")
    write_compact(upscale / "compact_x2.safetensors", scale=2)
    net = random_restoreformer(tiny_config(RESTOREFORMER, **SPANDREL_SHAPED))
    save_restoreformer(net, upscale / "rf_spandrel.safetensors", net.config)  # the same file in both folders
    save_restoreformer(net, restore / "rf_spandrel.safetensors", net.config)
    tiny = random_restoreformer()
    save_restoreformer(tiny, restore / "tiny_rf.safetensors", tiny.config)
    _use_folder("upscale_models", upscale)
    _use_folder(MODEL_FOLDER, restore)
    yield {"upscale": upscale, "restore": restore}
    for key, value in saved.items():
        if value is not None:
            folder_paths.folder_names_and_paths[key] = value


def core_load(name: str):
    """A model as ComfyUI's core Load Upscale Model node loads it."""
    out = UpscaleModelLoader.execute(name)
    return out.result[0] if hasattr(out, "result") else out[0]


def _scene(h=160, w=180):
    g = torch.Generator().manual_seed(0)
    small = torch.rand(1, 3, 10, 10, generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic").clamp(0, 1).permute(0, 2, 3, 1)


def _restore(image, model, **kw):
    args = dict(strength=1.0, precision="fp32", feather=40.0, erode=8.0, color_match="none")
    args.update(kw)
    return RestoreFaces().restore(image, model, **args)


def test_core_loaded_restoreformer_restores_like_the_packs_loader(folders):
    descriptor = core_load("rf_spandrel.safetensors")
    assert descriptor.architecture.id == "RestoreFormer"
    (ours,) = LoadModel().load("rf_spandrel.safetensors")
    image = _scene(300, 280)
    faces = make_faces([(0, landmarks_at(140, 150, 160))], 1, 300, 280)
    theirs_image, theirs_mask, theirs_crops, report = _restore(image, descriptor, faces=faces)
    ours_image, ours_mask, ours_crops, _ = _restore(image, ours, faces=faces)
    assert report.startswith("restored 1 face in image with RestoreFormer (spandrel) (fp32, 4 crops per call)")
    assert theirs_crops.shape == (1, 512, 512, 3)
    assert (theirs_crops - ours_crops).abs().max() <= 1e-4
    assert (theirs_image - ours_image).abs().max() <= 1e-4 and torch.equal(theirs_mask, ours_mask)
    assert descriptor.device.type == "cpu"  # handed back to the CPU after use, as the core node does


def test_an_upscale_model_upscales_first_and_faces_are_restored_at_the_new_size(folders):
    upscaler = core_load("compact_x2.safetensors")
    (tiny,) = LoadModel().load("tiny_rf.safetensors")
    image = _scene()
    faces = make_faces([(0, landmarks_at(90, 80, 70))], 1, 160, 180)
    mask = torch.ones(1, 160, 180)
    mask[:, :, 90:] = 0
    out, pasted, crops, report = _restore(image, tiny, faces=faces, upscale_model=upscaler, mask=mask)
    assert out.shape == (1, 320, 360, 3) and pasted.shape == (1, 320, 360)
    lines = report.splitlines()
    assert "upscaled 2x with RealESRGAN Compact (2x, SR) in 1 tile of 180 px" in lines
    assert "paste mask: only where the connected mask allows" in lines
    plain = upscaler(image.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    untouched = pasted == 0
    assert torch.allclose(out[untouched], plain[untouched], atol=1e-6)  # outside the faces: the upscaled image
    assert float(pasted[:, :, 182:].max()) == 0.0 and float(pasted.max()) > 0.9  # right half masked out
    assert crops.shape == (1, 64, 64, 3)


def test_models_connected_to_the_wrong_input_get_a_message_that_says_where_they_go(folders):
    (tiny,) = LoadModel().load("tiny_rf.safetensors")
    upscaler = core_load("compact_x2.safetensors")
    faces = make_faces([(0, landmarks_at(90, 80, 70))], 1, 160, 180)
    with pytest.raises(ValueError, match="is not a face-restoration model.*connect it to upscale_model"):
        _restore(_scene(), upscaler, faces=faces)
    with pytest.raises(ValueError, match="upscale_model: RestoreFormer .*restores aligned faces"):
        _restore(_scene(), tiny, faces=faces, upscale_model=core_load("rf_spandrel.safetensors"))


class StandInBBoxDetector:
    """Impact's BBOX_DETECTOR interface around one fixed box (what a YOLO face model would return)."""

    def __init__(self, box):
        self.box, self.calls = box, 0

    def detect(self, image, threshold, dilation, crop_factor, drop_size=1, detailer_hook=None):
        import numpy as np

        from restoreformer_node.faces.segs import SEG, crop_region

        self.calls += 1
        _, H, W, _ = image.shape
        region = crop_region(W, H, self.box, crop_factor)
        x0, y0, x1, y1 = region
        mask = np.ones((y1 - y0, x1 - x0), dtype=np.float32)
        seg = SEG(image[:, y0:y1, x0:x1], mask, np.array([0.9], np.float32), region, np.array(self.box, np.float32), "face")
        return ((H, W), [seg])

    def detect_combined(self, image, threshold, dilation):
        return None

    def setAux(self, x):
        pass


@pytest.fixture(scope="module")
def photo(astronaut):
    image = image_batch(astronaut).permute(0, 3, 1, 2)
    return torch.nn.functional.interpolate(image, size=(256, 256), mode="area").permute(0, 2, 3, 1).contiguous()


def test_a_bbox_detector_drives_restore_faces_and_detect_faces(folders, photo):
    (tiny,) = LoadModel().load("tiny_rf.safetensors")
    faces, *_ = DetectFaces().detect(photo, "all", "0", "left to right", 0, 0.9, 1280)
    x0, y0, x1, y1 = faces.faces[0].box.tolist()
    stand_in = StandInBBoxDetector([x0 - 6, y0 - 12, x1 + 6, y1 + 4])
    out, mask, crops, report = _restore(photo, tiny, detector=stand_in)
    assert stand_in.calls == 1 and crops.shape == (1, 64, 64, 3) and float(mask.max()) > 0.9
    assert "restored 1 face in image" in report
    _, reference, *_ = _restore(photo, tiny, faces=faces)
    inside, ref_inside = mask > 0.5, reference > 0.5  # the same face: the paste regions coincide
    assert (inside & ref_inside).sum() / (inside | ref_inside).sum() > 0.9
    boxed, _, count, summary = DetectFaces().detect(photo, "all", "0", "left to right", 0, 0.9, 1280, stand_in)
    assert count == 1 and "BBOX_DETECTOR (StandInBBoxDetector), landmarks by MTCNN" in summary


def test_faces_to_segs_and_back_through_the_nodes(folders, photo):
    faces, *_ = DetectFaces().detect(photo, "all", "0", "left to right", 0, 0.9, 1280)
    (segs,) = FacesToSEGS().convert(photo, faces, 3.0)
    assert segs[0] == (256, 256) and len(segs[1]) == 1
    back, count, summary = SEGSToFaces().convert(photo, segs)
    assert count == 1 and summary.startswith("1 face in image (256x256) by SEGS, landmarks by MTCNN")
    eyes = (faces.faces[0].landmarks[1] - faces.faces[0].landmarks[0]).norm()
    assert float((back.faces[0].landmarks - faces.faces[0].landmarks).norm(dim=1).max() / eyes) < 0.08


def test_load_face_parser_reads_models_facedetection_and_says_what_is_missing(folders, tmp_path):
    from restoreformer_node.faces.parsing import build_network

    _use_folder("facedetection", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"parsing_bisenet\.pth.*not in .*Download it from https://github.com/xinntao/facexlib/releases/download/v0\.2\.0/parsing_bisenet\.pth"):
        LoadFaceParser().load("bisenet", "skin, eyes", "restored", 4.0)
    assert LoadFaceParser.IS_CHANGED("bisenet") == "missing"
    torch.save(build_network("bisenet").state_dict(), tmp_path / "parsing_bisenet.pth")
    (parser,) = LoadFaceParser().load("bisenet", "skin, eyes", "original", 2.0)
    assert isinstance(parser, FaceParsing) and parser.regions == ("skin", "eyes") and parser.source == "original"
    with pytest.raises(ValueError, match=r"regions: unknown region\(s\) 'teeth'"):
        LoadFaceParser().load("bisenet", "skin, teeth", "restored", 4.0)


def test_paste_faces_respects_a_mask(folders):
    image = _scene()
    faces = make_faces([(0, landmarks_at(90, 80, 70))], 1, 160, 180)
    crops = torch.ones(1, 64, 64, 3)
    mask = torch.zeros(1, 160, 180)
    mask[:, :80] = 1
    out, pasted = PasteFaces().paste(image, crops, faces, 40.0, 8.0, "none", mask=mask)
    assert torch.equal(out[:, 80:], image[:, 80:]) and float(pasted[:, 80:].max()) == 0.0
    assert float(pasted[:, :80].max()) > 0.9
