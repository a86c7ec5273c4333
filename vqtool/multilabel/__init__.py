"""Multi-label classification ("which of these are in the image?"): a task built on classification's training
loop, backbones, feature cache and store, with sigmoid outputs, per-label thresholds and its own metrics."""
