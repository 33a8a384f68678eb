"""ONNX Runtime as a peer in the CPU benchmark: the same weights exported with torch.onnx.export
(opset 17) and run by onnxruntime's CPU execution provider.

A CPU user who does not use this pack would most likely run RestoreFormer++ as ONNX (facefusion
ships it that way), so the CPU table has an ONNX Runtime row. onnxruntime, onnx and onnxscript are
bench-only dependencies (`pip install -e ".[bench]"`).
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable

import torch

OPSET = 17


def available() -> str | None:
    """None when ONNX Runtime and the exporter's dependencies import, else why not."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        return f"{error.name or error} is not installed (pip install -e '.[bench]')"
    return None


def export(model: torch.nn.Module, x: torch.Tensor, path: str) -> str:
    """Write `model` (the plain network, fp32) as ONNX opset 17 to `path`; returns the exporter used.

    The TorchScript exporter writes opset 17 directly; the dynamo exporter (torch's default) writes
    opset 18 and cannot convert this graph down, so it is the fallback only.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            torch.onnx.export(model, (x,), path, opset_version=OPSET, dynamo=False,
                              input_names=["input"], output_names=["output"])
            return f"torch.onnx.export(dynamo=False), opset {OPSET}"
        except Exception as error:  # noqa: BLE001 - try the other exporter, say which one ran
            print(f"[TorchScript ONNX export failed: {type(error).__name__}: {str(error)[:200]}; trying dynamo]")
            torch.onnx.export(model, (x,), path, opset_version=OPSET, dynamo=True,
                              input_names=["input"], output_names=["output"])
            return "torch.onnx.export(dynamo=True)"


def session(model: torch.nn.Module, x: torch.Tensor, threads: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """(x -> output through ONNX Runtime's CPU provider with `threads` intra-op threads, a
    description: exporter, ORT version, threads, export seconds). Graph optimisations at
    ORT_ENABLE_ALL (ORT's default: NCHWc convolutions, fusions); ORT's own thread settings otherwise."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory(prefix="rf-onnx-") as folder:  # the session holds the weights
        path = os.path.join(folder, "restoreformer.onnx")
        t0 = time.perf_counter()
        how = export(model, x, path)
        exported = time.perf_counter() - t0
        sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(sess.run(None, {name: t.detach().cpu().numpy()})[0])

    return run, f"{how}, onnxruntime {ort.__version__} CPUExecutionProvider, {threads} intra-op threads, export {exported:.0f} s"
