"""For the compile tests: torch.compile backends (one records what TorchDynamo captures, one
fails)."""

from __future__ import annotations

import torch

SIZE = 64  # tiny_config's resolution


class RecordingBackend:
    """A torch.compile backend that records the batch size of every graph TorchDynamo captures and
    runs the captured graph as it is (no code generation, so it is fast). Parameters are graph
    inputs too; the crops are the input shaped [batch, 3, 64, 64]."""

    __name__ = "recording"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.channels_last: list[bool] = []  # per graph with the crops as input: were they NHWC

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        crops = [t for t in example_inputs if isinstance(t, torch.Tensor) and t.shape[1:] == (3, SIZE, SIZE)]
        self.batches.append(crops[0].shape[0] if crops else -1)  # -1: a graph after a break
        if crops:
            self.channels_last.append(crops[0].is_contiguous(memory_format=torch.channels_last))
        return gm.forward


class FailingBackend:
    """A torch.compile backend that fails the way a missing Triton does, counting its calls."""

    __name__ = "failing"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, gm, example_inputs):
        self.calls += 1
        raise RuntimeError("Cannot find a working triton installation. Either the package is not installed or it is too old.")

