"""`python -m training` under torchrun, with rank 1's gradients optionally scaled before averaging.

Used by the DDP tests to show that their bounds catch a rank whose gradients are wrong:
RF_TEST_RANK1_GRAD_SCALE=1.25 multiplies every gradient bucket of rank 1 by 1.25 in a DDP comm
hook, just before DDP's usual all-reduce averages it; 1 (or unset) leaves DDP as it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

SCALE = float(os.environ.get("RF_TEST_RANK1_GRAD_SCALE", "1"))


def _scaled_allreduce(process_group, bucket):
    bucket.buffer().mul_(SCALE)
    return allreduce_hook(process_group, bucket)


if SCALE != 1.0:
    _init = DistributedDataParallel.__init__

    def _init_with_hook(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        if dist.get_rank() == 1:
            self.register_comm_hook(self.process_group, _scaled_allreduce)

    DistributedDataParallel.__init__ = _init_with_hook

if __name__ == "__main__":
    # Run as a script, its own folder (tests/helpers, whose modules are named like top-level
    # packages) would come first on sys.path: the repository root takes its place.
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from training.__main__ import main

    sys.exit(main(sys.argv[1:]))
