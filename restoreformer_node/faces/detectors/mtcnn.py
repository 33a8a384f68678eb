"""MTCNN (facenet-pytorch 2.5.3): the offline default, its weights ship inside the wheel.

facenet-pytorch's `MTCNN.detect` takes a [B, H, W, 3] tensor of RGB values on the 0..255 scale
(it permutes and normalises with (x - 127.5) / 128 itself), runs its P/R/O-net cascade on the whole
batch at once, and returns per image [N, 4] boxes, [N] probabilities and [N, 5, 2] landmarks in
the order left eye, right eye, nose, left mouth corner, right mouth corner (image left first) -
the order of the 512 template. Images without a face come back as None.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import MIN_IMAGE_SIDE, Detection, FaceDetector, finite_detection

# facenet-pytorch's defaults: smallest face 20 px, per-stage thresholds of the original MTCNN.
MIN_FACE_SIZE = MIN_IMAGE_SIDE
STAGE_THRESHOLDS = (0.6, 0.7, 0.7)


class MTCNNDetector(FaceDetector):
    kind = "mtcnn"
    name = "MTCNN (facenet-pytorch)"

    def __init__(self, device: torch.device | str = "cpu"):
        super().__init__(device)
        # Imported here: facenet_pytorch pulls torchvision and (for its other model) requests.
        from facenet_pytorch.models.mtcnn import MTCNN

        self.net = MTCNN(
            min_face_size=MIN_FACE_SIZE,
            thresholds=list(STAGE_THRESHOLDS),
            keep_all=True,
            select_largest=False,
            post_process=False,
            device=self.device,
        ).eval()

    def _detect_chunk(self, rgb255: torch.Tensor) -> list[Detection]:
        nhwc = rgb255.permute(0, 2, 3, 1)
        boxes, probs, points = self.net.detect(nhwc, landmarks=True)
        found = []
        for box, prob, point in zip(boxes, probs, points):
            if box is None:
                found.append(Detection.empty())
                continue
            found.append(
                finite_detection(
                    torch.from_numpy(np.asarray(box, dtype=np.float32)),
                    torch.from_numpy(np.asarray(point, dtype=np.float32)),
                    torch.from_numpy(np.asarray(prob, dtype=np.float32)),
                )
            )
        return found
