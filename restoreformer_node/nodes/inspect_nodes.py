"""Nodes: look inside a RestoreFormer — its HQ dictionary, the codes faces choose, and where the
cross-attention looks. Thin adapters over `restoreformer_node.inspection`.

Faces come in either as aligned square crops (e.g. from Align Faces) or as an image with FACES
(aligned here with the pack's own warp; with no FACES, MTCNN finds them as in Face Restore).
"""

from __future__ import annotations

import torch

from .. import inspection as ins
from .common import (
    INSPECT_CATEGORY,
    QUERY_CROP_UI,
    Progress,
    check_image,
    compute_device,
    temp_preview,
    to_image,
)
from .types import FACES, MODEL

UNITS = ("relative (0..1)", "crop pixels")

_TIP_MODEL = "A RestoreFormer / RestoreFormer++ from Load Model (RestoreFormer)."
_TIP_CROPS = (
    "Aligned square face crops (e.g. the crops output of Align Faces; 512x512 for the published models). "
    "When connected, image and faces are ignored."
)
_TIP_IMAGE = (
    "Images with faces, used when no crops are connected: the faces are aligned to the 512x512 template "
    "here (with the connected faces, or found with MTCNN when none are connected)."
)
_TIP_FACES = "Faces from Detect Faces, aligned out of `image`. Without them MTCNN finds the faces."
_TIP_BATCH = "Faces per network call. Lower it if the device runs out of memory."


def _face_inputs(required_help: str) -> dict:
    return {
        "crops": ("IMAGE", {"tooltip": _TIP_CROPS + " " + required_help}),
        "image": ("IMAGE", {"tooltip": _TIP_IMAGE}),
        "faces": (FACES, {"tooltip": _TIP_FACES}),
    }


def _prepare_model(rf_model):
    """The network on ComfyUI's compute device (ComfyUI may offload it again later)."""
    if rf_model is None or not hasattr(rf_model, "patcher"):
        raise ValueError("model: connect a RestoreFormer model from Load Model (RestoreFormer)")
    rf_model.load_to_device()
    return rf_model.model.eval()


def _faces(crops=None, image=None, faces=None, required: bool = True):
    """The faces to inspect on ComfyUI's compute device (inspection.gather_faces)."""
    if image is not None:
        image = check_image(image, "image")
    return ins.gather_faces(compute_device(), crops, image, faces, required)


def _stepper(total: int):
    """A library on_step(n) callback driving ComfyUI's progress bar (and its Cancel button)."""
    progress = Progress(total)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    return step


def _nhwc(images: torch.Tensor) -> torch.Tensor:
    return to_image(images.permute(0, 2, 3, 1))


def _with_notes(text: str, batch) -> str:
    return text if batch is None else batch.with_notes(text)


# ---------------------------------------------------------------------------------------------


class DictionaryAtlas:
    SEARCH_ALIASES = ["codebook", "dictionary", "vq codebook"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": _TIP_MODEL}),
                "cells": (
                    "INT",
                    {
                        "default": 1, "min": 1, "max": ins.atlas.MAX_CELLS,
                        "tooltip": "Each tile decodes a cells x cells latent grid filled with one dictionary "
                        "entry (32 px per cell for the published models). 1 shows each entry in isolation; "
                        "2-4 show it as a small repeated texture (4x / 9x / 16x the decoding work).",
                    },
                ),
                "order": (
                    list(ins.ATLAS_ORDERS),
                    {
                        "default": "index",
                        "tooltip": "index: as stored. usage: most chosen first over the connected faces "
                        "(needs faces). similarity: a nearest-neighbour chain through the entries, laid "
                        "out boustrophedon so similar entries sit side by side.",
                    },
                ),
                "entries": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Show only these entries: indices and ranges like '0-63, 100, 512-'. "
                        "Empty shows the whole dictionary.",
                    },
                ),
                "limit": (
                    "INT",
                    {"default": 0, "min": 0, "max": 65536, "tooltip": "Show at most this many tiles after "
                     "ordering (e.g. the 64 most used); 0 shows all."},
                ),
                "columns": (
                    "INT",
                    {"default": 0, "min": 0, "max": 1024, "tooltip": "Tiles per row; 0 makes a near-square grid."},
                ),
                "scale": (
                    "INT",
                    {"default": 1, "min": 1, "max": 16, "tooltip": "Enlarge every tile by this factor "
                     "(pixel repetition, no smoothing)."},
                ),
                "gap": (
                    "INT",
                    {"default": 1, "min": 0, "max": 16, "tooltip": "Black pixels between tiles."},
                ),
            },
            "optional": _face_inputs("Only needed to order by usage."),
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("atlas", "info")
    OUTPUT_TOOLTIPS = (
        "One image with a tile per shown dictionary entry.",
        "What is shown: entries in tile order, tile size, and how tiles were decoded.",
    )
    FUNCTION = "run"
    CATEGORY = INSPECT_CATEGORY
    DESCRIPTION = (
        "Decodes every entry of the model's HQ dictionary to an image patch through the model's own "
        "decoder (a latent grid filled with that entry, decoded as the stage-1 dictionary network does, "
        "attention over the prior stream) and lays the patches out as one image, like Figure 3 (b) of "
        "the paper. Decoded tiles are cached per model file and cells."
    )

    def run(self, model, cells, order, entries, limit, columns, scale, gap, crops=None, image=None, faces=None):
        network = _prepare_model(model)
        n_embed = network.config.n_embed
        subset = ins.parse_entries(entries, n_embed)
        counts = None
        batch = None
        if order == "usage":
            batch = _faces(crops, image, faces, required=False)
            if batch is None:
                raise ValueError(
                    "order 'usage' counts codes over faces: connect crops or an image, or choose another order"
                )
            codes = ins.encode_codes(network, batch.crops, on_step=_stepper(batch.crops.shape[0]))
            counts = ins.code_usage(codes.indices, n_embed).counts
        shown = len(subset) if subset is not None else n_embed
        if limit:
            shown = min(shown, limit)
        atlas = ins.build_atlas(
            network, cells=cells, order=order, counts=counts, subset=subset, limit=limit,
            columns=columns, gap=gap, scale=scale, model_name=getattr(model, "name", ""),
            on_step=_stepper(shown),
        )
        rows = -(-atlas.entries.numel() // atlas.columns)
        listed = atlas.entries.tolist()
        head = ", ".join(map(str, listed[:64])) + (" ..." if len(listed) > 64 else "")
        info = (
            f"{len(listed)} of {n_embed} entries, order: {order}, grid {atlas.columns} x {rows} tiles of "
            f"{atlas.tile} px ({cells}x{cells} latent cells each{', scaled x' + str(scale) if scale > 1 else ''})"
            f"{', boustrophedon (odd rows run right to left)' if atlas.serpentine else ''}\n"
            f"tile order: {head}\n"
            "each tile: a latent grid filled with one entry, decoded by post_quant_conv + decoder with "
            "self-attention over the prior stream (the stage-1 view)"
        )
        return (to_image(atlas.image.permute(1, 2, 0).unsqueeze(0)), _with_notes(info, batch))


class CodeUsage:
    SEARCH_ALIASES = ["codebook usage", "perplexity"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": _TIP_MODEL}),
                "width": ("INT", {"default": 1024, "min": 256, "max": 4096, "tooltip": "Plot width in pixels."}),
                "height": ("INT", {"default": 512, "min": 192, "max": 4096, "tooltip": "Plot height in pixels."}),
                "top": ("INT", {"default": 10, "min": 0, "max": 100, "tooltip": "How many of the most used "
                        "entries the summary lists."}),
                "batch_size": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": _TIP_BATCH}),
            },
            "optional": _face_inputs("Crops or an image are required."),
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("plot", "summary")
    OUTPUT_TOOLTIPS = (
        "Histogram of chosen entries (index order, code-map colours) and the entries sorted by use with "
        "the cumulative share of cells.",
        "Faces, cells, entries used and their share of the dictionary, perplexity, most used entries.",
    )
    FUNCTION = "run"
    CATEGORY = INSPECT_CATEGORY
    DESCRIPTION = (
        "Counts which HQ-dictionary entries the faces' latent cells choose (the nearest entry to each "
        "encoder feature). Perplexity = exp(entropy of the usage): the number of equally used entries "
        "with the same spread."
    )

    def run(self, model, width, height, top, batch_size, crops=None, image=None, faces=None):
        network = _prepare_model(model)
        batch = _faces(crops, image, faces)
        codes = ins.encode_codes(network, batch.crops, batch_size, on_step=_stepper(batch.crops.shape[0]))
        usage = ins.code_usage(codes.indices, network.config.n_embed)
        plot = ins.usage_plot(usage, width, height)
        return (to_image(plot.permute(1, 2, 0).unsqueeze(0)), _with_notes(usage.summary(top), batch))


class CodeMap:
    SEARCH_ALIASES = ["codebook map", "vq codes", "token map"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": _TIP_MODEL}),
                "opacity": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 1.0, "step": 0.05,
                            "tooltip": "How strongly the code colours and the heat map cover the face."}),
                "grid": ("BOOLEAN", {"default": True, "tooltip": "Draw the latent cell boundaries on the code map."}),
                "normalise": (
                    list(ins.NORMALISE),
                    {
                        "default": "per face",
                        "tooltip": "Scale distances so the largest is 1 in each face ('per face') or over the "
                        "whole batch ('batch', comparable across faces).",
                    },
                ),
                "smooth": ("BOOLEAN", {"default": True, "tooltip": "Upsample the distance map bilinearly "
                           "(a soft blending mask); off shows each latent cell as a flat square."}),
                "batch_size": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": _TIP_BATCH}),
            },
            "optional": _face_inputs("Crops or an image are required."),
        }

    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK", "MASK")
    RETURN_NAMES = ("code_map", "distance_map", "mask", "image_mask")
    OUTPUT_TOOLTIPS = (
        "Per face crop: every latent cell painted in its dictionary entry's fixed colour over the face.",
        "Per face crop: distance between each encoder feature and the entry that replaced it, as heat.",
        "The distance map as a MASK at crop resolution, 0..1: 1 where the prior replaced the input most.",
        "The same mask pasted back over the image by the faces' transforms (soft edges as in Restore "
        "Faces), for blending restored and original images; equals `mask` when crops were connected.",
    )
    FUNCTION = "run"
    CATEGORY = INSPECT_CATEGORY
    DESCRIPTION = (
        "Shows, per face, which HQ-dictionary entry every latent cell chose (fixed colour per entry) and "
        "how far each encoder feature was from it: where the prior replaced the input most."
    )

    def run(self, model, opacity, grid, normalise, smooth, batch_size, crops=None, image=None, faces=None):
        network = _prepare_model(model)
        batch = _faces(crops, image, faces)
        codes = ins.encode_codes(network, batch.crops, batch_size, on_step=_stepper(batch.crops.shape[0]))
        faces_rgb = batch.crops
        code_map = ins.code_map_image(faces_rgb, codes, network.config.n_embed, opacity=opacity, grid=grid)
        mask = ins.distance_mask(codes, batch.size, normalise=normalise, smooth=smooth).to(faces_rgb.device)
        heat = ins.heat_overlay(faces_rgb, mask, opacity=opacity)
        image_mask = ins.paste_mask(batch, mask)
        return (_nhwc(code_map), _nhwc(heat), to_image(mask), to_image(image_mask))


class AttentionMap:
    SEARCH_ALIASES = ["cross attention", "attention heatmap"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": _TIP_MODEL}),
                "x": ("FLOAT", {"default": 0.377, "min": 0.0, "max": 4096.0, "step": 0.001,
                      "tooltip": "Horizontal position of the query point on the face crop (the default "
                      "is the template's left eye, as in Figure 6 of the paper)."}),
                "y": ("FLOAT", {"default": 0.469, "min": 0.0, "max": 4096.0, "step": 0.001,
                      "tooltip": "Vertical position of the query point on the face crop."}),
                "units": (list(UNITS), {"default": UNITS[0], "tooltip": "x and y as fractions of the crop "
                          "(0..1) or in pixels of the crops (0..511 for 512 crops)."}),
                "block": (
                    list(ins.BLOCK_CHOICES),
                    {
                        "default": "first",
                        "tooltip": "Which cross-attention block of each level to show: the first, second or "
                        "third after the level's residual blocks, or 'mid' for the decoder's mid-section "
                        "attention at 16x16 (finer levels then show their first block).",
                    },
                ),
                "tile": ("INT", {"default": 256, "min": 64, "max": 1024, "step": 8,
                         "tooltip": "Side of each map in the output sheet, in pixels."}),
                "opacity": ("FLOAT", {"default": 0.65, "min": 0.0, "max": 1.0, "step": 0.05,
                            "tooltip": "How strongly the attention heat covers the face."}),
                "batch_size": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": _TIP_BATCH}),
            },
            "optional": _face_inputs("Crops or an image are required."),
        }

    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("maps", "mask", "info")
    OUTPUT_TOOLTIPS = (
        "One sheet per face: a row per attention level (16x16; RestoreFormer++ also 32x32), a column per "
        "head and a last column with the mean over heads; a ring marks the query point.",
        "Mean attention over heads at 16x16, upsampled to crop resolution and scaled to max 1.",
        "Which blocks and query cells are shown.",
    )
    FUNCTION = "run"
    CATEGORY = INSPECT_CATEGORY
    DESCRIPTION = (
        "Where the decoder's multi-head cross-attention looks from one point of the face: each head's "
        "weights over all key positions of the prior stream, overlaid on the face like Figure 6 (d, e) "
        "of the paper. After a run the node shows the first face's crop: click it to pick the point."
    )

    def run(self, model, x, y, units, block, tile, opacity, batch_size, crops=None, image=None, faces=None):
        network = _prepare_model(model)
        batch = _faces(crops, image, faces)
        if units == UNITS[1]:
            point = (x / batch.size, y / batch.size)
        elif units == UNITS[0]:
            point = (x, y)
        else:
            raise ValueError(f"units: choose one of {', '.join(UNITS)}")
        if not (0 <= point[0] <= 1 and 0 <= point[1] <= 1):
            raise ValueError(
                f"x, y: the point ({x}, {y}) lies outside the crop; give fractions 0..1 or pixels "
                f"0..{batch.size - 1} (units: {units})"
            )
        maps = ins.attention_maps(network, batch.crops, point, block, batch_size, _stepper(batch.crops.shape[0]))
        sheet = ins.attention_sheet(batch.crops, maps, tile=tile, opacity=opacity)
        mask = ins.attention_mask(maps, batch.size)
        lines = [
            f"{lv.name}: {lv.grid}x{lv.grid} keys, {network.config.heads} heads, query cell "
            f"(row {maps.cells[lv.name][0]}, column {maps.cells[lv.name][1]})"
            for lv in maps.levels
        ]
        info = f"query point ({point[0]:.3f}, {point[1]:.3f}) of the crop\n" + "\n".join(lines)
        # The first face's crop, shown on the node: clicking it sets x and y (web/js).
        crop = temp_preview(batch.crops[0].permute(1, 2, 0), "restoreformer_query_crop")
        return {"ui": {QUERY_CROP_UI: [crop]}, "result": (_nhwc(sheet), to_image(mask), _with_notes(info, batch))}


NODES = {
    "RestoreFormerDictionaryAtlas": (DictionaryAtlas, "Dictionary Atlas (RestoreFormer)"),
    "RestoreFormerCodeUsage": (CodeUsage, "Code Usage (RestoreFormer)"),
    "RestoreFormerCodeMap": (CodeMap, "Code Map (RestoreFormer)"),
    "RestoreFormerAttentionMap": (AttentionMap, "Attention Map (RestoreFormer)"),
}
