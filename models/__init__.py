"""ONNX gradient graphs, the runtime wrapper, exporters and the bundled demo models."""
