"""The choices and defaults a user sees, defined once for the nodes, the command line and the library.

This module imports nothing (no torch), so the command line builds its parser without loading
PyTorch and every layer of the package may use it.
"""

from __future__ import annotations

# Arithmetic of the network (runtime/precision.py decides what really runs on a device).
PRECISIONS = ("fp32", "bf16", "fp16")
# Dtypes the weights may be held in (fp16 weights are not offered: fp16 needs fp32 islands, which
# live in its autocast path).
WEIGHT_DTYPES = ("fp32", "bf16")
# torch.compile modes worth offering: "reduce-overhead" adds CUDA graphs (less launch overhead, more
# memory); "max-autotune-no-cudagraphs" benchmarks kernels while compiling (minutes).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")

# Paste-back: mask inset and soft edge in pixels of a 512 crop, colour matching, and what an
# aligned crop shows beyond the image edge.
DEFAULT_FEATHER = 40.0
DEFAULT_ERODE = 8.0
MAX_FEATHER = 256.0
MAX_ERODE = 200.0
COLOR_MATCH_MODES = ("none", "mean", "mean_std")
BORDER_MODES = ("constant", "edge", "reflect")

# Face detectors: MTCNN needs nothing; the RetinaFace kinds need facexlib's weight file.
DETECTORS = ("mtcnn", "retinaface_resnet50", "retinaface_mobilenet0.25")
DEFAULT_DETECTOR = "mtcnn"
# Which faces of an image are kept, and in which order they are numbered.
FACE_SELECT_MODES = ("all", "largest", "by index")
FACE_ORDERS = ("left to right", "largest first")
# Video batches: faces tracked through the frames and their landmarks smoothed over time. Strength 0
# treats the images of a batch separately (no tracking); DEFAULT_VIDEO_SMOOTHING is the strength the
# video workflow and `restore --sequence` use. A tracked face missed for up to DEFAULT_TRACK_GAP
# frames keeps its track, and those frames get its interpolated position.
DEFAULT_VIDEO_SMOOTHING = 0.5
DEFAULT_TRACK_GAP = 5

# Order of the tiles of the dictionary atlas.
ATLAS_ORDERS = ("index", "usage", "similarity")

# Image files the command line reads, and the most pixels one may have (--max-pixels): a few
# hundred bytes of PNG can declare a 13000x13000 image, which would take gigabytes to restore.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 50_000_000
# Video files `restore --sequence` reads frame by frame (through OpenCV's FFmpeg).
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
