"""Real early exit at run time: batched and streaming inference, prediction on image files.

- Batched: `RAViT.early_exit(x, thresholds, policy)` compacts the batch after
  each exit, so the later branches run only on the images still in it.
- Streaming: `StreamingRunner(model, thresholds, policy)(image)` for one
  image at a time, with thresholds that may change between images.
- Files: `load_image`, `collect_image_paths` and `predict` (docs/runtime.md).
- Exported: `ravit.runtime.exported.OnnxRAViT`, the same early exit on
  onnxruntime without torch (docs/deploy.md), reading the export folder's
  manifest (`ravit.runtime.manifest`).

Deployment needs no trainer: nothing here imports `ravit.training`. The
names below load on first use (`ravit._lazy`): `images`, `records`,
`manifest` and `exported` need no torch, and importing them does not import it.
"""

from ravit._lazy import lazy_exports

__all__ = lazy_exports(
    __name__,
    {
        "images": ["IMAGE_EXTENSIONS", "collect_image_paths", "load_image", "read_image"],
        "prediction": ["predict"],
        "records": ["PredictError", "Prediction"],
        "streaming": ["StreamingRunner", "StreamResult"],
    },
)
