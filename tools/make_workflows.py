"""Write the shipped example workflows (example_workflows/*.json) with the real frontend.

Each workflow is described here compactly (nodes by type, widgets by name, links by socket name)
and built inside ComfyUI's own frontend, served by a live test server with this pack loaded; the
frontend serializes it. So node ids, links and the order of widgets_values are exactly what
frontend 1.32.9 writes, and a changed node definition shows up as a build error, not as a
silently wrong file.

    COMFYUI_DIR=/path/to/comfyui python -m tools.make_workflows [name ...]

The tests load, convert and run every file written here (test_live_comfyui.py, test_browser_workflows.py).
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path

# Node ids of this pack (see restoreformer_node/nodes).
LOAD_MODEL = "RestoreFormerModelLoader"
LOAD_DETECTOR = "RestoreFormerLoadFaceDetector"
DETECT = "RestoreFormerDetectFaces"
RESTORE = "RestoreFormerRestoreFaces"
PASTE = "RestoreFormerPasteFaces"
ALIGN = "RestoreFormerAlignFaces"
ATLAS = "RestoreFormerDictionaryAtlas"
USAGE = "RestoreFormerCodeUsage"
CODE_MAP = "RestoreFormerCodeMap"
ATTENTION = "RestoreFormerAttentionMap"
FACES_TO_SEGS = "RestoreFormerFacesToSEGS"
SEGS_TO_FACES = "RestoreFormerSEGSToFaces"
# ComfyUI's core loader for spandrel models (models/upscale_models) and a common 2x upscaler's file.
LOAD_UPSCALER = "UpscaleModelLoader"
DEFAULT_UPSCALER = "RealESRGAN_x2plus.pth"

# The file name users get from the RestoreFormer release, in models/facerestore_models.
DEFAULT_MODEL = "RestoreFormer.ckpt"
# Every ComfyUI install has this file in input/; users pick their own photo.
DEFAULT_IMAGE = "example.png"

X = [0, 420, 840, 1260, 1680]


def _note(key: str, pos, text: str) -> dict:
    return {"key": key, "type": "Note", "pos": pos, "widgets": {"text": text}, "size": [380, 180]}


def restore_photo() -> dict:
    """A photo -> detect (preview) -> restore -> save, with the mask and the restored crops shown."""
    return {
        "nodes": [
            _note(
                "note",
                [X[0], -260],
                "Restore the faces of a photo.\n\n1. Put RestoreFormer.ckpt (or RestoreFormer++.ckpt) "
                "into models/facerestore_models and pick it in Load RestoreFormer Model.\n"
                "2. Load your photo.\n3. Run. The preview shows what was detected; the mask shows "
                "which pixels were replaced (everything else is untouched).",
            ),
            {"key": "image", "type": "LoadImage", "pos": [X[0], 0], "widgets": {"image": DEFAULT_IMAGE}},
            {"key": "detector", "type": LOAD_DETECTOR, "pos": [X[0], 420]},
            {"key": "model", "type": LOAD_MODEL, "pos": [X[1], -260], "widgets": {"model_name": DEFAULT_MODEL}},
            {"key": "detect", "type": DETECT, "pos": [X[1], 0]},
            {"key": "restore", "type": RESTORE, "pos": [X[2], 0]},
            {"key": "save", "type": "SaveImage", "pos": [X[3], 0], "widgets": {"filename_prefix": "restoreformer/photo"}},
            {"key": "preview", "type": "PreviewImage", "pos": [X[2], 420], "title": "Detected faces"},
            {"key": "report", "type": "PreviewAny", "pos": [X[3], 700], "title": "What was done"},
            {"key": "mask_image", "type": "MaskToImage", "pos": [X[3], 420]},
            {"key": "mask_preview", "type": "PreviewImage", "pos": [X[4], 420], "title": "Restored regions (mask)"},
        ],
        "links": [
            ("image", "IMAGE", "detect", "images"),
            ("detector", 0, "detect", "detector"),
            ("detect", "preview", "preview", "images"),
            ("restore", "report", "report", "source"),
            ("image", "IMAGE", "restore", "image"),
            ("model", 0, "restore", "model"),
            ("detect", "faces", "restore", "faces"),
            ("restore", "image", "save", "images"),
            ("restore", "mask", "mask_image", "mask"),
            ("mask_image", "IMAGE", "mask_preview", "images"),
        ],
    }


def diffusion_chain() -> dict:
    """txt2img with a checkpoint, then the faces of the generated image restored."""
    return {
        "nodes": [
            _note(
                "note",
                [X[0], -260],
                "Generate, then restore the faces.\n\nPick any SD1.5/SDXL checkpoint. Faces of "
                "generated people are often the weakest part of the picture; RestoreFormer replaces "
                "them with faces built from its learned high-quality dictionary. Lower `strength` "
                "on the restore node to keep more of the generated face.",
            ),
            {"key": "ckpt", "type": "CheckpointLoaderSimple", "pos": [X[0], 0]},
            {
                "key": "pos",
                "type": "CLIPTextEncode",
                "pos": [X[1], -260],
                "title": "Positive",
                "widgets": {"text": "portrait photo of an astronaut smiling, natural light, 50mm"},
            },
            {
                "key": "neg",
                "type": "CLIPTextEncode",
                "pos": [X[1], 0],
                "title": "Negative",
                "widgets": {"text": "blurry, cartoon, deformed"},
            },
            {"key": "latent", "type": "EmptyLatentImage", "pos": [X[1], 260], "widgets": {"width": 512, "height": 512}},
            {"key": "sampler", "type": "KSampler", "pos": [X[2], 0], "widgets": {"seed": 1234, "steps": 25, "cfg": 7.0}},
            {"key": "decode", "type": "VAEDecode", "pos": [X[3], -260]},
            {"key": "model", "type": LOAD_MODEL, "pos": [X[3], -120], "widgets": {"model_name": DEFAULT_MODEL}},
            {"key": "detect", "type": DETECT, "pos": [X[3], 40]},
            {"key": "restore", "type": RESTORE, "pos": [X[4], -260]},
            {"key": "save", "type": "SaveImage", "pos": [X[4], 200], "widgets": {"filename_prefix": "restoreformer/txt2img"}},
        ],
        "links": [
            ("ckpt", "MODEL", "sampler", "model"),
            ("ckpt", "CLIP", "pos", "clip"),
            ("ckpt", "CLIP", "neg", "clip"),
            ("pos", "CONDITIONING", "sampler", "positive"),
            ("neg", "CONDITIONING", "sampler", "negative"),
            ("latent", "LATENT", "sampler", "latent_image"),
            ("sampler", "LATENT", "decode", "samples"),
            ("ckpt", "VAE", "decode", "vae"),
            ("decode", "IMAGE", "detect", "images"),
            ("decode", "IMAGE", "restore", "image"),
            ("model", 0, "restore", "model"),
            ("detect", "faces", "restore", "faces"),
            ("restore", "image", "save", "images"),
        ],
    }


def video_frames() -> dict:
    """A batch of frames (here one photo repeated; in practice a video loader's IMAGE batch)
    restored in one pass: detection per frame, restoration batched over all faces."""
    return {
        "nodes": [
            _note(
                "note",
                [X[0], -260],
                "Restore the faces of video frames in one pass.\n\nReplace Load Image + Repeat "
                "Image Batch with your video loader (any node giving an IMAGE batch). Faces of all "
                "frames are restored together in chunks sized to your memory.\n\nThe model is loaded "
                "with bf16 weights: on a GPU that halves its memory and restores faster (a CPU loads "
                "fp32 and the report says so). Choose fp32 for results identical to the reference.",
            ),
            {"key": "image", "type": "LoadImage", "pos": [X[0], 0], "widgets": {"image": DEFAULT_IMAGE}},
            {"key": "frames", "type": "RepeatImageBatch", "pos": [X[1], 0], "widgets": {"amount": 8}, "title": "Frames"},
            {"key": "model", "type": LOAD_MODEL, "pos": [X[1], -260],
             "widgets": {"model_name": DEFAULT_MODEL, "weight_dtype": "bf16"}},
            {"key": "detect", "type": DETECT, "pos": [X[2], 0]},
            {"key": "restore", "type": RESTORE, "pos": [X[3], 0]},
            {"key": "save", "type": "SaveImage", "pos": [X[4], 0], "widgets": {"filename_prefix": "restoreformer/frame"}},
        ],
        "links": [
            ("image", "IMAGE", "frames", "image"),
            ("frames", "IMAGE", "detect", "images"),
            ("frames", "IMAGE", "restore", "image"),
            ("model", 0, "restore", "model"),
            ("detect", "faces", "restore", "faces"),
            ("restore", "image", "save", "images"),
        ],
    }


def inspect_dictionary() -> dict:
    """What the model's learned dictionary holds and how it was used on the faces of a photo:
    the atlas ordered by usage, the usage histogram, per-face code and distance maps, and the
    cross-attention of one point of the face (the paper's Figures 3 and 6)."""
    face_inputs = [("image", "IMAGE"), ("detect", "faces")]
    nodes = [
        _note(
            "note",
            [X[0], -260],
            "Look inside RestoreFormer.\n\nAtlas: every entry of the high-quality dictionary decoded "
            "to a patch, most used first. Code usage: which entries these faces chose. Code map: the "
            "entry chosen at each latent cell, and how far each feature was from it (bright = the prior "
            "replaced the input most). Attention: where the point x, y of the face looks in the priors.",
        ),
        {"key": "image", "type": "LoadImage", "pos": [X[0], 0], "widgets": {"image": DEFAULT_IMAGE}},
        {"key": "model", "type": LOAD_MODEL, "pos": [X[1], -260], "widgets": {"model_name": DEFAULT_MODEL}},
        {"key": "detect", "type": DETECT, "pos": [X[1], 0]},
        {"key": "atlas", "type": ATLAS, "pos": [X[2], -260], "widgets": {"order": "usage", "limit": 256}},
        {"key": "usage", "type": USAGE, "pos": [X[2], 160]},
        {"key": "codes", "type": CODE_MAP, "pos": [X[2], 480]},
        {"key": "attention", "type": ATTENTION, "pos": [X[2], 800]},
        {"key": "atlas_view", "type": "PreviewImage", "pos": [X[3], -260], "title": "Dictionary atlas"},
        {"key": "usage_view", "type": "PreviewImage", "pos": [X[3], 160], "title": "Code usage"},
        {"key": "usage_text", "type": "PreviewAny", "pos": [X[4], 160], "title": "Usage summary"},
        {"key": "code_view", "type": "PreviewImage", "pos": [X[3], 480], "title": "Code map"},
        {"key": "distance_view", "type": "PreviewImage", "pos": [X[4], 480], "title": "Distance to the prior"},
        {"key": "attention_view", "type": "PreviewImage", "pos": [X[3], 800], "title": "Cross-attention"},
    ]
    links = [("image", "IMAGE", "detect", "images")]
    for node in ("atlas", "usage", "codes", "attention"):
        links.append(("model", 0, node, "model"))
        links += [(src, out, node, name) for name, (src, out) in zip(("image", "faces"), face_inputs)]
    links += [
        ("atlas", "atlas", "atlas_view", "images"),
        ("usage", "plot", "usage_view", "images"),
        ("usage", "summary", "usage_text", "source"),
        ("codes", "code_map", "code_view", "images"),
        ("codes", "distance_map", "distance_view", "images"),
        ("attention", "maps", "attention_view", "images"),
    ]
    return {"nodes": nodes, "links": links}


def edit_aligned_faces() -> dict:
    """Align the faces, edit the aligned crops with any image nodes, paste them back: the pipeline
    split open (here the edit is a sharpen; img2img on the crops works the same way)."""
    return {
        "nodes": [
            _note(
                "note",
                [X[0], -260],
                "Edit faces in the aligned frame.\n\nAlign Faces cuts every face out as an upright "
                "square crop; edit the crops with any nodes (sharpen, img2img, a face swap); Paste Faces "
                "puts them back through a soft mask. Pixels the mask does not reach stay untouched.",
            ),
            {"key": "image", "type": "LoadImage", "pos": [X[0], 0], "widgets": {"image": DEFAULT_IMAGE}},
            {"key": "detect", "type": DETECT, "pos": [X[1], 0]},
            {"key": "align", "type": ALIGN, "pos": [X[2], -260]},
            {"key": "edit", "type": "ImageSharpen", "pos": [X[2], -60], "title": "Edit the crops",
             "widgets": {"sharpen_radius": 2, "sigma": 1.5, "alpha": 2.0}},
            {"key": "paste", "type": PASTE, "pos": [X[3], 0]},
            {"key": "save", "type": "SaveImage", "pos": [X[4], 0], "widgets": {"filename_prefix": "restoreformer/edited"}},
        ],
        "links": [
            ("image", "IMAGE", "detect", "images"),
            ("image", "IMAGE", "align", "image"),
            ("detect", "faces", "align", "faces"),
            ("align", "crops", "edit", "image"),
            ("image", "IMAGE", "paste", "image"),
            ("edit", "IMAGE", "paste", "crops"),
            ("detect", "faces", "paste", "faces"),
            ("paste", "image", "save", "images"),
        ],
    }


def segs_and_upscale() -> dict:
    """Faces through Impact Pack's SEGS and back, then restored into a 2x upscaled image: the pack
    as one step of an Impact / upscale graph (runs without Impact Pack installed)."""
    return {
        "nodes": [
            _note(
                "note",
                [X[0], -260],
                "Faces as Impact Pack SEGS, restored in an upscaled image.\n\n1. Put an upscaler (e.g. "
                "RealESRGAN_x2plus.pth) into models/upscale_models and RestoreFormer.ckpt into "
                "models/facerestore_models.\n2. Load your photo and run: the photo is upscaled first, "
                "then the faces are restored at the new size.\n\nWith Impact Pack, any SEGS work here: "
                "replace Detect Faces + Faces to SEGS with BBOX Detector (SEGS) and a YOLO face model, or "
                "send the SEGS through Impact's SEGS filters first.",
            ),
            {"key": "image", "type": "LoadImage", "pos": [X[0], 0], "widgets": {"image": DEFAULT_IMAGE}},
            {"key": "detect", "type": DETECT, "pos": [X[1], 0]},
            {"key": "to_segs", "type": FACES_TO_SEGS, "pos": [X[2], -260], "widgets": {"crop_factor": 3.0}},
            {"key": "from_segs", "type": SEGS_TO_FACES, "pos": [X[2], -60]},
            {"key": "upscaler", "type": LOAD_UPSCALER, "pos": [X[2], 200], "widgets": {"model_name": DEFAULT_UPSCALER}},
            {"key": "model", "type": LOAD_MODEL, "pos": [X[2], 340], "widgets": {"model_name": DEFAULT_MODEL}},
            {"key": "restore", "type": RESTORE, "pos": [X[3], 0]},
            {"key": "save", "type": "SaveImage", "pos": [X[4], 0], "widgets": {"filename_prefix": "restoreformer/upscaled"}},
            {"key": "report", "type": "PreviewAny", "pos": [X[4], 420], "title": "What was done"},
        ],
        "links": [
            ("image", "IMAGE", "detect", "images"),
            ("image", "IMAGE", "to_segs", "image"),
            ("detect", "faces", "to_segs", "faces"),
            ("image", "IMAGE", "from_segs", "image"),
            ("to_segs", "segs", "from_segs", "segs"),
            ("image", "IMAGE", "restore", "image"),
            ("model", 0, "restore", "model"),
            ("from_segs", "faces", "restore", "faces"),
            ("upscaler", 0, "restore", "upscale_model"),
            ("restore", "image", "save", "images"),
            ("restore", "report", "report", "source"),
        ],
    }


SPECS = {
    "restore_faces_in_a_photo": restore_photo,
    "txt2img_then_restore_faces": diffusion_chain,
    "restore_video_frames": video_frames,
    "inspect_the_dictionary": inspect_dictionary,
    "edit_faces_between_align_and_paste": edit_aligned_faces,
    "restore_segs_in_an_upscaled_image": segs_and_upscale,
}


def main(names: list[str]) -> None:
    # A live ComfyUI and a browser build the graphs: the test suite's helpers for both.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import browser
    from helpers.live_server import LiveComfyUI
    from helpers.workflow_format import WORKFLOW_DIR

    server = LiveComfyUI().start()
    try:
        known = set(server.object_info())
        with browser.comfy_page(server.url) as (page, _console):
            WORKFLOW_DIR.mkdir(exist_ok=True)
            for name in names or list(SPECS):
                spec = SPECS[name]()
                lacking = sorted({n["type"] for n in spec["nodes"] if n["type"] != "Note"} - known)
                if lacking:
                    print(f"skip {name}: the server lacks {lacking}")
                    continue
                workflow, _ids = browser.build_workflow(page, spec)
                # A stable id per workflow (the frontend tells open workflows apart by it) and a
                # view that shows the whole graph on a laptop screen when it opens.
                workflow["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-restoreformer/{name}"))
                workflow["extra"]["ds"] = {"scale": 0.75, "offset": [60, 330]}
                path = WORKFLOW_DIR / f"{name}.json"
                path.write_text(json.dumps(workflow, indent=2) + "\n")
                print(f"wrote {path} ({len(workflow['nodes'])} nodes)")
    finally:
        server.stop()
        shutil.rmtree(server.work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
