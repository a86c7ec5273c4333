"""The files a classifier is kept in: checkpoints (safetensors + JSON), exported models' metadata, and their paths."""
