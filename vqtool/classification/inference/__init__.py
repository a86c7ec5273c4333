"""Running a classifier of any runtime over images: logits, evaluation, confusion, predict (streaming), Grad-CAM."""
