"""lesionseg export: checkpoints (Keras .h5, SCT ONNX, nnU-Net) to ONNX networks in a Triton repository."""
