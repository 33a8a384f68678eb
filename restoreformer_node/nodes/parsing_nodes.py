"""Node: choose a face parser (facexlib's BiSeNet or ParseNet from models/facedetection) and the face
regions to paste; Restore Faces and Paste Faces then paste only those regions."""

from __future__ import annotations

import os

from ..faces.parsing import (
    DEFAULT_BLUR,
    DEFAULT_REGIONS,
    PARSE_SOURCES,
    PARSERS,
    REGIONS,
    ParserWeightsMissing,
    load_parsing,
    missing_parser_message,
    parse_regions,
    parser_file_name,
)
from .common import DETECTOR_FOLDER, FACES_CATEGORY, compute_device, register_models_folder
from .types import PARSER


def parser_weights(kind: str) -> str:
    """Full path of the parser's file in the facedetection folders; raises ParserWeightsMissing
    naming the file, the folders and the download address."""
    import folder_paths

    register_models_folder(DETECTOR_FOLDER)
    path = folder_paths.get_full_path(DETECTOR_FOLDER, parser_file_name(kind))
    if path is None:
        raise ParserWeightsMissing(missing_parser_message(kind, folder_paths.get_folder_paths(DETECTOR_FOLDER)))
    return path


class LoadFaceParser:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "parser": (
                    list(PARSERS),
                    {"default": "bisenet",
                     "tooltip": "bisenet: needs parsing_bisenet.pth in models/facedetection. parsenet: needs "
                     "parsing_parsenet.pth there (the parser of facexlib's own paste-back). Both are facexlib's "
                     "release files; nothing is downloaded."},
                ),
                "regions": (
                    "STRING",
                    {"default": ", ".join(DEFAULT_REGIONS),
                     "tooltip": "Face regions to paste, separated by commas, from: " + ", ".join(REGIONS)
                     + ". Add glasses to restore them too; leave hair out so hair in front of the face stays."},
                ),
                "parse": (
                    list(PARSE_SOURCES),
                    {"default": "restored",
                     "tooltip": "Which face is parsed: the restored one (as facexlib's paste-back does; clean "
                     "input for the parser) or the original (follows what is really in front of the face)."},
                ),
                "blur": (
                    "FLOAT",
                    {"default": DEFAULT_BLUR, "min": 0.0, "max": 64.0, "step": 0.5,
                     "tooltip": "Soft edge of the region mask (Gaussian sigma, pixels of the 512x512 face crop); "
                     "0 gives hard edges."},
                ),
            }
        }

    RETURN_TYPES = (PARSER,)
    RETURN_NAMES = ("parser",)
    OUTPUT_TOOLTIPS = ("A face parser for the parser input of Restore Faces and Paste Faces.",)
    FUNCTION = "load"
    CATEGORY = FACES_CATEGORY
    DESCRIPTION = (
        "Loads facexlib's face-parsing network (BiSeNet or ParseNet) from models/facedetection and chooses "
        "the face regions Restore Faces and Paste Faces paste, so hair, hands and glasses in front of a "
        "face keep their original pixels. Parsing runs on the GPU with the face crops."
    )

    @classmethod
    def IS_CHANGED(cls, parser: str, **_):
        """A replaced weight file (same name, new contents) is loaded again on the next run."""
        try:
            path = parser_weights(parser)
        except (FileNotFoundError, ValueError):
            return "missing"
        stat = os.stat(path)
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"

    def load(self, parser: str, regions: str, parse: str, blur: float):
        chosen = parse_regions(regions)  # a typo fails before any file is read
        return (load_parsing(parser, parser_weights(parser), compute_device(), chosen, parse, float(blur)),)


NODES = {"RestoreFormerLoadFaceParser": (LoadFaceParser, "Load Face Parser (RestoreFormer)")}
