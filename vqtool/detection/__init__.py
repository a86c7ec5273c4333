"""Object detection through Ultralytics YOLO: detect, and train / finetune / eval / confusion / export of detectors.

The commands hand over to this package when :func:`vqtool.tasks.task_of` says
their target is a detector's. Nothing here imports torch or Ultralytics at
import time.
"""
