"""int8 exports: post-training static quantization calibrated on real images, then judged on held-out ones.

ONNX files go through ONNX Runtime's ``quantize_static`` (QDQ, per-channel
int8 weights, uint8 activations); OpenVINO IRs through NNCF's ``quantize``.
Both calibrate on training images the run recorded (or ``--calibrate DATA``),
decoded and normalised as ``predict`` prepares its inputs, and neither sees
the held-out images the export is then judged on: top-1 agreement with the
checkpoint and the accuracy it loses, within ``--max-drop`` points or exit 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from vqtool.errors import VQError, first_line
from vqtool.exporting import ExportOptions, require
from vqtool.reporter import Reporter

HELD_OUT_IMAGES = 1000  # at most this many held-out images judge an int8 export (spread over the split)
CALIBRATION_BATCH = 16


def evenly(count: int, wanted: int) -> torch.Tensor:
    """``wanted`` indices spread over ``count`` items (lists sorted by class still give every class)."""
    return torch.linspace(0, count - 1, min(wanted, count)).round().long().unique()


def calibration_images(checkpoint, preprocess, options: ExportOptions, reporter: Reporter) -> torch.Tensor:
    """Normalised images (N×C×H×W float32) to calibrate with: ``--calibrate DATA`` whole, else the run's training
    split; one Error line when there are none."""
    from vqtool.classification.inference.classifier import Classifier
    from vqtool.classification.inference.evaluate import dataset_for
    from vqtool.data import DataOptions
    from vqtool.data.pipeline import Normalizer, decode_split

    classifier = Classifier(checkpoint.model, checkpoint.classes, preprocess, checkpoint.meta)
    try:
        dataset = dataset_for(classifier, options.calibrate, DataOptions())
    except VQError as error:
        raise VQError(f"--int8 needs calibration images: {first_line(error)}; name some with --calibrate DATA",
                      usage=error.usage) from error
    split = dataset.train
    if split is None or len(split) == 0:
        raise VQError(f"--int8 needs calibration images and {dataset.name} has no training images; "
                      f"name some with --calibrate DATA")
    chosen = split.subset(evenly(len(split), options.calibration_images))
    reporter.log(f"calibrating int8 on {len(chosen)} {'--calibrate' if options.calibrate else 'training'} images "
                 f"of {dataset.name}")
    pixels = decode_split(chosen, preprocess, reporter=reporter, store=False).pixels
    return Normalizer(preprocess, torch.device("cpu"))(pixels).float()


def calibration_batches(images: torch.Tensor, batch: int | None) -> list[np.ndarray]:
    """The images in batches a model of input batch ``batch`` (None: any) takes."""
    size = batch or CALIBRATION_BATCH
    return [chunk.contiguous().numpy() for chunk in images.split(size) if batch is None or len(chunk) == batch]


def quantize_onnx(source: Path, destination: Path, images: torch.Tensor, batch: int | None) -> None:
    """ONNX Runtime static QDQ quantization of ``source`` into ``destination``."""
    require("onnxruntime", "an int8 ONNX export")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from vqtool.classification.checkpoints.export_format import INPUT_NAME

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration_batches(images, batch))

        def get_next(self):
            chunk = next(self.batches, None)
            return None if chunk is None else {INPUT_NAME: chunk}

    with tempfile.TemporaryDirectory(dir=destination.parent) as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(destination), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def quantize_openvino(model, images: torch.Tensor, batch: int | None):
    """NNCF post-training int8 quantization of an OpenVINO model (returned; the input is left unchanged)."""
    # Importing NNCF imports torch's C++ extension helper, which logs a CUDA warning irrelevant to a CPU export.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    nncf = require("nncf", "an int8 OpenVINO export")
    batches = calibration_batches(images, batch)
    # NNCF draws its own progress bars on stdout, which holds our results, with no regard for --quiet or a pipe;
    # the export's log line already says that calibration runs
    with open(os.devnull, "w") as nowhere, contextlib.redirect_stdout(nowhere):
        return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))  # a sample is one batch


def held_out_batch(checkpoint, preprocess, dataset_spec: str | None, reporter: Reporter):
    """(normalised images, labels) of held-out real images in the model's class order, or None when there are none."""
    from vqtool.classification.export.verify import held_out_split
    from vqtool.data.pipeline import Normalizer, decode_split

    found = held_out_split(checkpoint, preprocess, dataset_spec)
    if isinstance(found, str):
        reporter.warn(f"no held-out images to judge the int8 export with ({found}); --data DATASET names some")
        return None
    split_name, split = found
    if split_name == "train" and not dataset_spec:
        reporter.warn("the run has no held-out split: the int8 export is judged on its training images")
    chosen = split.subset(evenly(len(split), HELD_OUT_IMAGES))
    pixels = decode_split(chosen, preprocess, reporter=reporter, store=False).pixels
    return Normalizer(preprocess, torch.device("cpu"))(pixels).float(), chosen.labels


def judge_int8(checkpoint, preprocess, exported, options: ExportOptions, reporter: Reporter) -> dict:
    """The verification fields of an int8 export: top-1 agreement and the accuracy lost on held-out images."""
    held_out = held_out_batch(checkpoint, preprocess, options.sample_data, reporter)
    if held_out is None:
        return {"verified": None, "max_drop": options.max_drop}
    images, labels = held_out
    with torch.no_grad():
        reference = torch.cat([checkpoint.model(chunk) for chunk in images.split(64)])
        quantized = torch.cat([exported(chunk) for chunk in images.split(64)])
    accuracy = float((reference.argmax(1) == labels).float().mean())
    int8_accuracy = float((quantized.argmax(1) == labels).float().mean())
    agreement = float((reference.argmax(1) == quantized.argmax(1)).float().mean())
    drop = round((accuracy - int8_accuracy) * 100, 2)
    reporter.log(f"int8 on {len(labels)} held-out images: top-1 agreement {agreement:.4f}, accuracy {int8_accuracy:.4f} "
                 f"vs {accuracy:.4f} for the checkpoint ({drop:+.2f} points lost, --max-drop {options.max_drop:g})")
    return {"verified": drop <= options.max_drop, "held_out_images": len(labels), "top1_agreement": agreement,
            "checkpoint_accuracy": accuracy, "export_accuracy": int8_accuracy, "accuracy_drop": drop,
            "max_drop": options.max_drop}
