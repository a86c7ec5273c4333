"""YOLO detectors through Ultralytics' own exporter, then checked box for box against the .pt.

ONNX and TorchScript need nothing beyond vqtool's export extra; Ultralytics'
other formats (openvino, engine, coreml, ncnn, ...) are passed through when
their packages are installed. vqtool never installs them: Ultralytics'
auto-install is off (:mod:`vqtool.detection.ultralytics_env`), so a missing
package surfaces as an import error, reported in one line.

Ultralytics writes the export beside the weights it loaded, so it exports a
copy of the weights in a scratch folder next to the destination, and the
result is moved to ``-o`` or beside the original weights. Nothing is written
to a runs/ folder: prediction for the check saves nothing.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from vqtool.data.inputs import Failure, expand_sources
from vqtool.detection.predict import DetectOptions
from vqtool.detection.ultralytics_env import keeping_threads, load_ultralytics
from vqtool.detection.weights import load_detector, resolve_weights
from vqtool.errors import VQError, first_line, suggest
from vqtool.pickles import UnsafeFile
from vqtool.reporter import Reporter
from vqtool.exporting import ExportOptions, export_warnings
from vqtool.runs.folder import check_output
from vqtool.runs.atomic_files import install

# Boxes are in pixels of the original image: fp32 runtimes agree to about a thousandth of a pixel,
# fp16 to a pixel or so on a 640 px input.
FP32_BOX_TOLERANCE = 0.05
FP16_BOX_TOLERANCE = 2.0
MATCH_IOU = 0.5  # a box of the export answers one of the .pt's when they overlap this much, same class
SAMPLE_IMAGES = 4
# What vqtool's options become in Ultralytics' export arguments, each only where the format takes it.
OPTION_ARGUMENTS = {"opset": "--opset", "dynamic": "--dynamic-batch", "quantize": "--half"}


def export_detector(weights: str, options: ExportOptions, reporter: Reporter) -> dict:
    """Export with Ultralytics, move the result into place, verify unless asked not to; the summary."""
    source = resolve_weights(weights)
    arguments = export_arguments(options)
    destination = output_path(source, options)
    model = detector(source)
    imgsz = options.imgsz or model.overrides.get("imgsz") or DetectOptions.imgsz
    started = time.perf_counter()
    write_export(source, destination, {**arguments, "imgsz": imgsz}, overwrite=options.overwrite)
    summary = {"file": str(destination), "format": options.format, "task": "detect", "weights": str(source),
               "classes": len(model.names), "imgsz": imgsz,
               "batch": "dynamic" if arguments.get("dynamic") else 1,
               "precision": "float16" if options.half else "float32",
               "size_mb": round(size_mb(destination), 2), "seconds": round(time.perf_counter() - started, 2)}
    reporter.log(f"wrote {destination} ({summary['size_mb']} MB, {options.format}, batch {summary['batch']})")
    if options.verify:
        summary.update(verify_detector(model, destination, imgsz, bool(arguments.get("dynamic")), options, reporter))
    return summary


def detector(weights: Path):
    """The YOLO model; a file Ultralytics cannot load is a bad argument here (it is neither kind of checkpoint),
    one refused as unsafe is not."""
    try:
        return load_detector(str(weights))
    except UnsafeFile:
        raise
    except VQError as error:
        raise VQError(first_line(error), usage=True) from error


def formats() -> dict[str, dict]:
    """Ultralytics' export formats: argument -> {suffix, arguments} (PyTorch itself left out)."""
    load_ultralytics()
    from ultralytics.engine.exporter import export_formats

    table = export_formats()
    return {argument: {"suffix": suffix, "arguments": set(arguments)}
            for argument, suffix, arguments in zip(table["Argument"], table["Suffix"], table["Arguments"])
            if argument != "-"}


def export_arguments(options: ExportOptions) -> dict:
    """Ultralytics' arguments for vqtool's options; VQError for options the format cannot take."""
    known = formats()
    if options.format not in known:
        raise VQError(f"--format {options.format}: not an Ultralytics export format{suggest(options.format, known)}; "
                      f"one of {', '.join(known)}", usage=True)
    wanted = {"opset": options.opset, "dynamic": options.dynamic_batch, "quantize": 16 if options.half else None}
    takes = known[options.format]["arguments"]
    for argument, value in wanted.items():
        if value and argument not in takes and argument != "dynamic":  # dynamic is the default, not a request
            raise VQError(f"{OPTION_ARGUMENTS[argument]} does not apply to --format {options.format}", usage=True)
    arguments = {"format": options.format, **{k: v for k, v in wanted.items() if k in takes and v is not None}}
    if options.half and options.format in ("onnx", "torchscript"):
        arguments["device"] = fp16_device()
    return arguments


def fp16_device() -> int:
    """Ultralytics converts ONNX and TorchScript exports to fp16 only on a GPU."""
    import torch

    if not torch.cuda.is_available():
        raise VQError("--half for a YOLO ONNX or TorchScript export needs a CUDA GPU (Ultralytics converts "
                      "to fp16 there)")
    return 0


def output_path(weights: Path, options: ExportOptions) -> Path:
    """-o, or the weights' name with the format's suffix beside them (model.pt -> model.onnx); refused where it
    would replace a file unasked."""
    suffix = formats()[options.format]["suffix"]
    if options.output is None:
        path = weights.with_name(weights.stem + suffix)
        check_output(path, overwrite=options.overwrite, option="the export")
        return path
    check_output(options.output, overwrite=options.overwrite)
    if not options.output.name.endswith(suffix):
        raise VQError(f"-o {options.output}: a {options.format} export must end in {suffix} "
                      f"(Ultralytics chooses the runtime by the name)", usage=True)
    return options.output


def write_export(weights: Path, destination: Path, arguments: dict, *, overwrite: bool = False) -> None:
    """Export a copy of the weights in a scratch folder beside the destination, then move the result there."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".vqtool-export-", dir=destination.parent) as scratch:
        copy = Path(scratch) / f"{destination.stem}.pt"
        shutil.copyfile(weights, copy)
        model = load_detector(str(copy))
        try:
            with quietly():
                artifact = Path(model.export(**arguments, verbose=False))
        except ModuleNotFoundError as error:
            raise VQError(f"exporting to {arguments['format']} needs the {error.name} package, which is not "
                          f"installed; install it yourself (vqtool never installs packages)") from error
        except Exception as error:  # Ultralytics raises assertions, ValueErrors and each converter's own errors
            raise VQError(f"{weights}: Ultralytics cannot export it to {arguments['format']} "
                          f"({first_line(error)})") from error
        replace(artifact, destination, overwrite)


@contextlib.contextmanager
def quietly():
    """Run Ultralytics without its log of a failure vqtool reports in one line, or torch's deprecation warnings.

    Both come back with --debug.
    """
    from vqtool.errors import debug_enabled

    logger = logging.getLogger("ultralytics")
    level = logger.level
    with warnings.catch_warnings(), keeping_threads():
        if not debug_enabled():
            logger.setLevel(logging.CRITICAL)
            warnings.simplefilter("ignore", export_warnings())
        try:
            yield
        finally:
            logger.setLevel(level)


def replace(artifact: Path, destination: Path, overwrite: bool) -> None:
    """Put the export (a file, or a folder for formats such as openvino) at ``destination``; what is there
    already is replaced only with ``overwrite``."""
    if artifact.is_file():
        install(artifact, destination, replace=overwrite)
        return
    check_output(destination, overwrite=overwrite)  # a folder appeared there during the export
    if destination.is_dir():
        shutil.rmtree(destination)
    elif destination.exists():
        destination.unlink()
    artifact.replace(destination)


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def verify_detector(reference, path: Path, imgsz: int, dynamic: bool, options: ExportOptions, reporter: Reporter) -> dict:
    """The sample images through the .pt and the export with detect's default settings, boxes matched.

    A fixed-size export letterboxes every image to a square, where the .pt pads only to the stride; the .pt
    gets the same square input then (rect=False), or the check would measure the padding, not the export.
    """
    exported = load_export(path)
    images = sample_images(options.sample_data)
    settings = {"imgsz": imgsz, "conf": DetectOptions.conf, "iou": DetectOptions.iou, "max_det": DetectOptions.max_det,
                "rect": dynamic, "device": "cpu" if not options.half else 0, "verbose": False, "save": False}
    totals = {"detections": 0, "exported_detections": 0, "matched": 0, "box_max_abs_diff": 0.0,
              "conf_max_abs_diff": 0.0}
    with quietly():
        for image in images:
            boxes = [model.predict(image, **settings)[0].boxes for model in (reference, exported)]
            totals = merge(totals, compare(*boxes))
    tolerance = options.tolerance if options.tolerance is not None else (
        FP16_BOX_TOLERANCE if options.half else FP32_BOX_TOLERANCE)
    verified = (totals["matched"] == totals["detections"] == totals["exported_detections"]
                and totals["box_max_abs_diff"] <= tolerance)
    reporter.log(f"verified on {len(images)} images at conf {DetectOptions.conf}: {totals['matched']} of "
        f"{totals['detections']} detections matched ({totals['exported_detections']} from the export), "
        f"box max abs diff {totals['box_max_abs_diff']:.3g} px")
    return {"verified": verified, **totals, "tolerance": tolerance, "verify_images": len(images)}


def load_export(path: Path):
    """The exported model as Ultralytics runs it (whatever the format, unlike --weights, which takes .pt/.onnx)."""
    ultralytics = load_ultralytics()
    try:
        with quietly():
            return ultralytics.YOLO(str(path), task="detect")
    except Exception as error:  # each format's runtime fails in its own way
        raise VQError(f"{path}: cannot be loaded to verify it ({first_line(error)}); --no-verify skips the check") \
            from error


def sample_images(spec: str | None) -> list[str]:
    """A few images from --data (images, a folder, a glob or a data.yaml), else Ultralytics' bundled ones."""
    if spec is None:
        load_ultralytics()
        from ultralytics.utils import ASSETS

        return [str(ASSETS / "bus.jpg"), str(ASSETS / "zidane.jpg")]
    sources = [spec]
    from vqtool.detection.data import is_yolo_yaml, load_yolo

    if is_yolo_yaml(spec):
        dataset = load_yolo(spec)
        sources = dataset.splits[dataset.heldout_split]
    images = [item.path for item in expand_sources(sources) if not isinstance(item, Failure) and not item.video]
    if not images:
        raise VQError(f"--data {spec}: no images to verify the export with", usage=True)
    return images[:SAMPLE_IMAGES]


def compare(reference, exported) -> dict:
    """Detections of one image: each of the .pt's matched to the export's best same-class box, greedily."""
    from ultralytics.utils.metrics import box_iou

    counts = {"detections": len(reference), "exported_detections": len(exported), "matched": 0,
              "box_max_abs_diff": 0.0, "conf_max_abs_diff": 0.0}
    if not len(reference) or not len(exported):
        return counts
    iou = box_iou(reference.xyxy.float(), exported.xyxy.float())
    iou[reference.cls[:, None] != exported.cls[None, :]] = 0
    for i in range(len(reference)):  # in order of confidence, as Ultralytics sorts them
        j = int(iou[i].argmax())
        if iou[i, j] < MATCH_IOU:
            continue
        iou[:, j] = 0  # each box of the export answers one box only
        counts["matched"] += 1
        counts["box_max_abs_diff"] = max(counts["box_max_abs_diff"],
                                         float((reference.xyxy[i] - exported.xyxy[j]).abs().max()))
        counts["conf_max_abs_diff"] = max(counts["conf_max_abs_diff"],
                                          float((reference.conf[i] - exported.conf[j]).abs()))
    return counts


def merge(totals: dict, counts: dict) -> dict:
    return {key: max(value, counts[key]) if key.endswith("max_abs_diff") else value + counts[key]
            for key, value in totals.items()}
