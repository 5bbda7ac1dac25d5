"""Models in the formats plants deploy (ONNX) and the runtime switch the pipeline uses."""
