"""Write the shipped example workflows (example_workflows/NAME.json) and their template
thumbnails (NAME.jpg beside each) with the real frontend.

Each workflow is described here compactly (nodes by type, widgets by name, links by socket name)
and built inside ComfyUI's own frontend, served by a live test server with this pack loaded; the
frontend serializes it. So node ids, links and the order of widgets_values are exactly what
frontend 1.32.9 writes, and a changed node definition shows up as a build error, not as a
silently wrong file. Then each file gets what a shared graph needs: `cnr_id`/`ver` on every node
(which pack it comes from, so the frontend can offer to install it), `models` on every loader
(name, official download URL, folder: the frontend lists a missing file and where it goes), and a
screenshot of the loaded graph as its thumbnail. The file name is the template's title.

    COMFYUI_DIR=/path/to/comfyui python -m tools.make_workflows [title ...]

The tests load, convert and run every file written here (test_live_comfyui.py, test_browser_workflows.py).
To add a workflow: write its graph function and add one row to WORKFLOWS (and any new model file
to MODEL_FILES).
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]

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

# Every ComfyUI install has this file in input/; users pick their own photo.
DEFAULT_IMAGE = "example.png"


@dataclass(frozen=True)
class ModelFile:
    """A model file a workflow names, as ComfyUI's workflow format declares it."""

    name: str  # the file name the loader's widget holds
    url: str  # the official download
    directory: str  # the models/ folder (a key of folder_paths.folder_names_and_paths)

    def entry(self) -> dict:
        return {"name": self.name, "url": self.url, "directory": self.directory}


RF_RELEASE = "https://github.com/wzhouxiff/RestoreFormerPlusPlus/releases/download/v1.0.0/"
RESTOREFORMER = ModelFile("RestoreFormer.ckpt", RF_RELEASE + "RestoreFormer.ckpt", "facerestore_models")
RESTOREFORMER_PP = ModelFile("RestoreFormer++.ckpt", RF_RELEASE + "RestoreFormer++.ckpt", "facerestore_models")
# Stable Diffusion 1.5 (fp16), from the archive ComfyUI's own templates download it from.
SD15 = ModelFile(
    "v1-5-pruned-emaonly-fp16.safetensors",
    "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors",
    "checkpoints",
)
# An upscaler many users have, from its official release.
REALESRGAN_X2 = ModelFile(
    DEFAULT_UPSCALER,
    "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
    "upscale_models",
)
MODEL_FILES = (RESTOREFORMER, RESTOREFORMER_PP, SD15, REALESRGAN_X2)

# Which widget of a loader names its file, and the models/ folder it lists.
LOADERS = {
    LOAD_MODEL: ("model_name", "facerestore_models"),
    "CheckpointLoaderSimple": ("ckpt_name", "checkpoints"),
    LOAD_UPSCALER: ("model_name", "upscale_models"),
}

# The Comfy Registry id of core nodes (the frontend installs no pack for them).
CORE_PACK = "comfy-core"

X = [0, 420, 840, 1260, 1720]
# Preview nodes big enough to read what they show (a new one is a 140 px strip).
PREVIEW = [400, 420]
TEXT_PREVIEW = [400, 240]
# The pack's nodes this wide at least: "<What> (RestoreFormer)" and the pack badge fit in the
# title, in the classic design and in Nodes 2.0.
PACK_NODE_WIDTH = 340


def _note(key: str, pos, text: str) -> dict:
    return {"key": key, "type": "Note", "pos": pos, "widgets": {"text": text}, "size": [380, 220]}


def _preview(key: str, pos, title: str, size=PREVIEW, kind: str = "PreviewImage") -> dict:
    return {"key": key, "type": kind, "pos": pos, "title": title, "size": size}


def _model(pos, **widgets) -> dict:
    return {"key": "model", "type": LOAD_MODEL, "pos": pos, "widgets": {"model_name": RESTOREFORMER.name, **widgets}}


def restore_photo() -> dict:
    """A photo -> detect (preview) -> restore -> save, with the mask and the report shown."""
    return {
        "nodes": [
            _note(
                "note",
                [X[0], -300],
                "Restore the faces of a photo.\n\n1. Put RestoreFormer.ckpt (or RestoreFormer++.ckpt) "
                "into models/facerestore_models and pick it in Load Model (RestoreFormer).\n"
                "2. Load your photo.\n3. Run. The preview shows what was detected; the mask shows "
                "which pixels were replaced (everything else is untouched).",
            ),
            {"key": "image", "type": "LoadImage", "pos": [X[0], 0], "widgets": {"image": DEFAULT_IMAGE},
             "size": [360, 420]},
            {"key": "detector", "type": LOAD_DETECTOR, "pos": [X[0], 560]},
            _model([X[1], -300]),
            {"key": "detect", "type": DETECT, "pos": [X[1], 0]},
            {"key": "restore", "type": RESTORE, "pos": [X[2], 0]},
            _preview("preview", [X[2], 340], "Detected faces"),
            {"key": "save", "type": "SaveImage", "pos": [X[3], 0], "widgets": {"filename_prefix": "restoreformer/photo"},
             "size": PREVIEW},
            {"key": "mask_image", "type": "MaskToImage", "pos": [X[3], 560]},
            _preview("report", [X[3], 660], "What was done", TEXT_PREVIEW, "PreviewAny"),
            _preview("mask_preview", [X[4], 0], "Restored regions (mask)"),
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
                [X[0], -300],
                "Generate, then restore the faces.\n\nThe checkpoint is Stable Diffusion 1.5; any "
                "SD1.5/SDXL checkpoint works. Faces of generated people are often the weakest part of "
                "the picture; RestoreFormer replaces them with faces built from its learned "
                "high-quality dictionary. Lower `strength` on the restore node to keep more of the "
                "generated face.",
            ),
            {"key": "ckpt", "type": "CheckpointLoaderSimple", "pos": [X[0], 0],
             "widgets": {"ckpt_name": SD15.name}},
            {
                "key": "pos",
                "type": "CLIPTextEncode",
                "pos": [X[1], -300],
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
            {"key": "latent", "type": "EmptyLatentImage", "pos": [X[1], 280], "widgets": {"width": 512, "height": 512}},
            {"key": "sampler", "type": "KSampler", "pos": [X[2], 0], "widgets": {"seed": 1234, "steps": 25, "cfg": 7.0}},
            {"key": "decode", "type": "VAEDecode", "pos": [X[2], -160]},
            _model([X[3], -300]),
            {"key": "detect", "type": DETECT, "pos": [X[2], 360]},
            {"key": "restore", "type": RESTORE, "pos": [X[3], -140]},
            {"key": "save", "type": "SaveImage", "pos": [X[4], -300], "widgets": {"filename_prefix": "restoreformer/txt2img"},
             "size": PREVIEW},
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
                [X[0], -300],
                "Restore the faces of video frames in one pass.\n\nReplace Load Image + Repeat "
                "Image Batch with your video loader (any node giving an IMAGE batch). Faces of all "
                "frames are restored together in chunks sized to your memory.\n\nThe model is loaded "
                "with bf16 weights: on a GPU that halves its memory and restores faster (a CPU loads "
                "fp32 and the report says so). Choose fp32 for results identical to the reference.",
            ),
            {"key": "image", "type": "LoadImage", "pos": [X[0], 0], "widgets": {"image": DEFAULT_IMAGE},
             "size": [360, 420]},
            {"key": "frames", "type": "RepeatImageBatch", "pos": [X[1], 0], "widgets": {"amount": 8}, "title": "Frames"},
            _model([X[1], -300], weight_dtype="bf16"),
            {"key": "detect", "type": DETECT, "pos": [X[1], 160]},
            {"key": "restore", "type": RESTORE, "pos": [X[2], 0]},
            {"key": "save", "type": "SaveImage", "pos": [X[3], 0], "widgets": {"filename_prefix": "restoreformer/frame"},
             "size": PREVIEW},
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
    cross-attention of one point of the face (the paper's Figures 3 and 6), each with its output
    shown beside it."""
    face_inputs = [("image", "IMAGE"), ("detect", "faces")]
    rows = {"atlas": -300, "usage": 160, "codes": 620, "attention": 1080}
    nodes = [
        _note(
            "note",
            [X[0], -300],
            "Look inside RestoreFormer.\n\nAtlas: every entry of the high-quality dictionary decoded "
            "to a patch, most used first. Code usage: which entries these faces chose. Code map: the "
            "entry chosen at each latent cell, and how far each feature was from it (bright = the prior "
            "replaced the input most). Attention: where the point x, y of the face looks in the priors; "
            "after a run, click the face shown in the Attention Map node to pick the point.",
        ),
        {"key": "image", "type": "LoadImage", "pos": [X[0], 0], "widgets": {"image": DEFAULT_IMAGE},
         "size": [360, 420]},
        _model([X[1], -300]),
        {"key": "detect", "type": DETECT, "pos": [X[1], 0]},
        {"key": "atlas", "type": ATLAS, "pos": [X[2], rows["atlas"]], "widgets": {"order": "usage", "limit": 256}},
        {"key": "usage", "type": USAGE, "pos": [X[2], rows["usage"]]},
        {"key": "codes", "type": CODE_MAP, "pos": [X[2], rows["codes"]]},
        {"key": "attention", "type": ATTENTION, "pos": [X[2], rows["attention"]]},
        _preview("atlas_view", [X[3], rows["atlas"]], "Dictionary atlas"),
        _preview("atlas_info", [X[4], rows["atlas"]], "Atlas entries", TEXT_PREVIEW, "PreviewAny"),
        _preview("usage_view", [X[3], rows["usage"]], "Code usage"),
        _preview("usage_text", [X[4], rows["usage"]], "Usage summary", TEXT_PREVIEW, "PreviewAny"),
        _preview("code_view", [X[3], rows["codes"]], "Code map"),
        _preview("distance_view", [X[4], rows["codes"]], "Distance to the prior"),
        _preview("attention_view", [X[3], rows["attention"]], "Cross-attention"),
        _preview("attention_info", [X[4], rows["attention"]], "Query point", TEXT_PREVIEW, "PreviewAny"),
    ]
    links = [("image", "IMAGE", "detect", "images")]
    for node in ("atlas", "usage", "codes", "attention"):
        links.append(("model", 0, node, "model"))
        links += [(src, out, node, name) for name, (src, out) in zip(("image", "faces"), face_inputs)]
    links += [
        ("atlas", "atlas", "atlas_view", "images"),
        ("atlas", "info", "atlas_info", "source"),
        ("usage", "plot", "usage_view", "images"),
        ("usage", "summary", "usage_text", "source"),
        ("codes", "code_map", "code_view", "images"),
        ("codes", "distance_map", "distance_view", "images"),
        ("attention", "maps", "attention_view", "images"),
        ("attention", "info", "attention_info", "source"),
    ]
    return {"nodes": nodes, "links": links}


def edit_aligned_faces() -> dict:
    """Align the faces, edit the aligned crops with any image nodes, paste them back: the pipeline
    split open (here the edit is a sharpen; img2img on the crops works the same way)."""
    return {
        "nodes": [
            _note(
                "note",
                [X[0], -300],
                "Edit faces in the aligned frame.\n\nAlign Faces cuts every face out as an upright "
                "square crop; edit the crops with any nodes (sharpen, img2img, a face swap); Paste Faces "
                "puts them back through a soft mask. Pixels the mask does not reach stay untouched.",
            ),
            {"key": "image", "type": "LoadImage", "pos": [X[0], 0], "widgets": {"image": DEFAULT_IMAGE},
             "size": [360, 420]},
            {"key": "detect", "type": DETECT, "pos": [X[1], 0]},
            {"key": "align", "type": ALIGN, "pos": [X[2], -300]},
            {"key": "edit", "type": "ImageSharpen", "pos": [X[2], -60], "title": "Edit the crops",
             "widgets": {"sharpen_radius": 2, "sigma": 1.5, "alpha": 2.0}},
            {"key": "paste", "type": PASTE, "pos": [X[3], 0]},
            {"key": "save", "type": "SaveImage", "pos": [X[4], 0], "widgets": {"filename_prefix": "restoreformer/edited"},
             "size": PREVIEW},
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
            _model([X[2], 340]),
            {"key": "restore", "type": RESTORE, "pos": [X[3], 0]},
            {"key": "save", "type": "SaveImage", "pos": [X[4], 0], "widgets": {"filename_prefix": "restoreformer/upscaled"}},
            _preview("report", [X[4], 420], "What was done", TEXT_PREVIEW, "PreviewAny"),
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


@dataclass(frozen=True)
class Workflow:
    graph: Callable[[], dict]  # nodes and links, as browser.build_workflow takes them
    models: tuple[ModelFile, ...] = ()  # files its loaders can pick (each loader's own is one of them)


RF_WEIGHTS = (RESTOREFORMER, RESTOREFORMER_PP)

# title (the file name, shown in ComfyUI's template browser) -> workflow. One row per workflow.
PHOTO = "Restore faces in a photo"
TXT2IMG = "Generate a portrait, then restore its faces"
VIDEO = "Restore faces in video frames"
INSPECT = "Inspect the learned dictionary"
EDIT = "Edit faces between Align and Paste"
SEGS = "Restore faces through Impact Pack SEGS in an upscaled image"
WORKFLOWS: dict[str, Workflow] = {
    PHOTO: Workflow(restore_photo, RF_WEIGHTS),
    TXT2IMG: Workflow(diffusion_chain, (SD15, *RF_WEIGHTS)),
    VIDEO: Workflow(video_frames, RF_WEIGHTS),
    INSPECT: Workflow(inspect_dictionary, RF_WEIGHTS),
    EDIT: Workflow(edit_aligned_faces),
    SEGS: Workflow(segs_and_upscale, (*RF_WEIGHTS, REALESRGAN_X2)),
}


# -- what a shared graph declares -----------------------------------------------------------------


def pack_release() -> tuple[str, str]:
    """(registry id, version) of this pack, from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["name"], project["version"]


def widen_pack_nodes(workflow: dict) -> None:
    for node in workflow["nodes"]:
        if node["type"].startswith("RestoreFormer"):
            node["size"][0] = max(node["size"][0], PACK_NODE_WIDTH)


def declare_packs(workflow: dict, object_info: dict, comfyui_version: str) -> None:
    """`cnr_id` and `ver` on every node: this pack's release, or comfy-core at the host's version.
    Frontend-only nodes (notes) have neither."""
    pack, version = pack_release()
    for node in workflow["nodes"]:
        if node["type"] not in object_info:
            continue
        module = object_info[node["type"]]["python_module"]
        properties = node.setdefault("properties", {})
        if not module.startswith("custom_nodes."):
            properties.update(cnr_id=CORE_PACK, ver=comfyui_version)
        elif node["type"].startswith("RestoreFormer"):
            properties.update(cnr_id=pack, ver=version)


def declare_models(workflow: dict, models: tuple[ModelFile, ...], object_info: dict) -> None:
    """`models` on every loader: the declared files of its folder. The one its widget names must
    be among them (the frontend lists a missing file only when the widget names it)."""
    from helpers.workflow_format import widget_names

    for node in workflow["nodes"]:
        if node["type"] not in LOADERS:
            continue
        widget, folder = LOADERS[node["type"]]
        chosen = node["widgets_values"][widget_names(object_info[node["type"]]).index(widget)]
        files = [m for m in models if m.directory == folder]
        if chosen not in {m.name for m in files}:
            raise ValueError(f"{node['type']} picks {chosen!r}: declare it in the workflow's models")
        node["properties"]["models"] = [m.entry() for m in files]


# -- writing ---------------------------------------------------------------------------------------

THUMBNAIL_WIDTH = 768  # px; the template browser shows cards a few hundred pixels wide
PAGE = (1920, 1080)  # the view saved in each file fits the whole graph on a screen this size


def write_thumbnail(png: bytes, path: Path) -> Path:
    """A small JPEG (the template browser asks for NAME.jpg) from a browser screenshot."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    if image.width > THUMBNAIL_WIDTH:
        image = image.resize((THUMBNAIL_WIDTH, round(image.height * THUMBNAIL_WIDTH / image.width)), Image.LANCZOS)
    image.save(path, "JPEG", quality=80, optimize=True, progressive=True)
    return path


def main(titles: list[str]) -> None:
    # A live ComfyUI and a browser build the graphs: the test suite's helpers for both.
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import browser
    from helpers.live_server import LiveComfyUI
    from helpers.workflow_format import WORKFLOW_DIR

    unknown = sorted(set(titles) - set(WORKFLOWS))
    if unknown:
        raise SystemExit(f"no such workflow: {unknown}; choose from {sorted(WORKFLOWS)}")
    server = LiveComfyUI().start()
    try:
        object_info = server.object_info()
        comfyui_version = server.get("/system_stats").json()["system"]["comfyui_version"]
        with browser.comfy_page(server.url, viewport=PAGE) as (page, _console):
            WORKFLOW_DIR.mkdir(exist_ok=True)
            for title in titles or list(WORKFLOWS):
                spec = WORKFLOWS[title]
                graph = spec.graph()
                lacking = sorted({n["type"] for n in graph["nodes"] if n["type"] != "Note"} - set(object_info))
                if lacking:
                    print(f"skip {title}: the server lacks {lacking}")
                    continue
                workflow, _ids = browser.build_workflow(page, graph)
                widen_pack_nodes(workflow)
                declare_packs(workflow, object_info, comfyui_version)
                declare_models(workflow, spec.models, object_info)
                # A stable id per workflow (the frontend tells open workflows apart by it).
                workflow["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-restoreformer/{title}"))
                # The view that shows the whole graph when it opens, and the thumbnail of that view.
                browser.load_workflow(page, workflow)
                workflow["extra"]["ds"] = browser.fit_view(page)
                path = WORKFLOW_DIR / f"{title}.json"
                path.write_text(json.dumps(workflow, indent=2) + "\n")
                thumbnail = write_thumbnail(browser.graph_screenshot(page), path.with_suffix(".jpg"))
                print(f"wrote {path.name} ({len(workflow['nodes'])} nodes), {thumbnail.name} "
                      f"({thumbnail.stat().st_size // 1024} KB)")
    finally:
        server.stop()
        shutil.rmtree(server.work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
