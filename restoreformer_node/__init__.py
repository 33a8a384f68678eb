"""RestoreFormer face restoration: the network, weight loading, the face pipeline and inspection.

Everything in this package but `restoreformer_node.nodes` is importable without ComfyUI.
"""

__version__ = "0.1.0"
