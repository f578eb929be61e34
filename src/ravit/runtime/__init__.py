"""Real early exit at run time: batched and streaming inference, prediction on image files.

- Batched: `RAViT.early_exit(x, thresholds, policy)` compacts the batch after
  each exit, so the later branches run only on the images still in it.
- Streaming: `StreamingRunner(model, thresholds, policy)(image)` for one
  image at a time, with thresholds that may change between images.
- Files: `load_image`, `collect_image_paths` and `predict` (docs/runtime.md).
"""

from ravit.runtime.images import IMAGE_EXTENSIONS, collect_image_paths, load_image
from ravit.runtime.predict import PredictError, Prediction, predict
from ravit.runtime.streaming import StreamingRunner, StreamResult

__all__ = [
    "IMAGE_EXTENSIONS",
    "PredictError",
    "Prediction",
    "StreamResult",
    "StreamingRunner",
    "collect_image_paths",
    "load_image",
    "predict",
]
