"""Custom ComfyUI type names of this pack (global across packs, hence prefixed)."""

MODEL = "RF_MODEL"  # a loaded RestoreFormer (see nodes/model_nodes.py)
FACES = "RF_FACES"  # restoreformer_node.faces.types.Faces
DETECTOR = "RF_FACE_DETECTOR"  # a face detector chosen in the graph
