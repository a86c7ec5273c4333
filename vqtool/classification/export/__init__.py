"""Checkpoints to ONNX, TorchScript and OpenVINO IR (int8 too), verified against the checkpoint; vqtool benchmark."""
