"""Export a trained RAViT for inference engines: one ONNX graph per exit and a manifest.

`export_onnx(run, out)` (torch, onnx and onnxruntime) writes the folder and
checks it against PyTorch (`export_model` does it for any RAViT in memory);
the manifest's format, which `ravit.runtime.exported` reads, is
`ravit.runtime.manifest`. docs/deploy.md describes both.
"""

from ravit._lazy import lazy_exports

__all__ = lazy_exports(
    __name__,
    {
        "choices": ["EXPORTERS"],
        "exporter": ["ExportReport", "ParityError", "check_parity", "export_model", "export_onnx"],
    },
)
