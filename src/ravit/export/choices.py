"""torch's ONNX exporters that `export_onnx` can use, importable without torch (the CLI)."""

EXPORTERS = ("torchscript", "dynamo")
