"""``vqtool benchmark``: one classifier in every runtime this machine has, measured side by side in one process.

For each format (torch eager, TorchScript, ONNX Runtime fp32 and int8,
OpenVINO fp32, bf16 and int8) it measures the load time, the file size, the
time per call at each batch size (median and 90th percentile) and the images
per second, on real images, and the accuracy and top-1 agreement with the
first format (the checkpoint) on a dataset. The exports a run folder needs are
built in a temporary folder and removed afterwards. Every figure is measured
here and now; the CPU's features (:mod:`vqtool.compute.cpu`) travel with them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vqtool.classification.inference.classifier import Classifier
from vqtool.classification.config import BENCHMARK_FORMATS as FORMATS, BenchmarkOptions
from vqtool.compute.cpu import cpu_features
from vqtool.errors import VQError, first_line
from vqtool.exporting import DEFAULT_CALIBRATION_IMAGES, INSTALL_HINT, INSTALL_LINES, ExportOptions
from vqtool.reporter import SILENT, Reporter

FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx", "openvino": "model.openvino"}


def benchmark(target: str, dataset_spec: str | None, options: BenchmarkOptions, data, reporter: Reporter = SILENT) -> dict:
    """Measure ``target`` (a run folder or checkpoint: every format in ``options``; an export: that file alone)."""
    from vqtool.classification.inference.evaluate import load_classifier

    features = cpu_features(with_openvino=True)
    reporter.log(f"benchmarking on {features.describe()}")
    reference = load_classifier(target)
    images, described = held_out(reference, dataset_spec, data, reporter)
    rows, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="vqtool-benchmark-") as folder:
        for name, load in candidates(target, reference, options, features, Path(folder), skipped, reporter):
            try:
                rows.append(measure(name, load, images, options, reporter))
            except VQError as error:
                skipped.append({"format": name, "reason": first_line(error)})
                reporter.warn(f"{name}: skipped ({first_line(error)})")
    judge(rows, options.max_drop)
    return {"target": target, "cpu": features.to_dict(), "dataset": described, "images": len(images),
            "batches": list(options.batches), "seconds_per_measurement": options.seconds, "max_drop": options.max_drop,
            "formats": rows, "skipped": skipped, "fastest": next((r["format"] for r in rows if r["fastest"]), None)}


@dataclass
class Images:
    """Decoded images (uint8, as predict decodes them) and their labels, normalised a batch at a time."""

    pixels: torch.Tensor
    labels: torch.Tensor
    normalize: object  # data.pipeline.Normalizer

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, size: int) -> torch.Tensor:
        """``size`` real images (repeated when there are fewer), normalised."""
        index = torch.arange(size) % len(self)
        return self.normalize(self.pixels[index]).float().contiguous()

    def batches(self, size: int):
        for start in range(0, len(self), size):
            yield self.normalize(self.pixels[start:start + size]).float().contiguous()


def held_out(classifier: Classifier, dataset_spec: str | None, data, reporter: Reporter) -> tuple[Images, str]:
    """The images of DATA, or of the model's own held-out split, and a description."""
    from vqtool.classification.inference.evaluate import evaluation_split
    from vqtool.data.pipeline import Normalizer, decode_split

    dataset, split_name, split = evaluation_split(classifier, dataset_spec, data, reporter=reporter)
    prepared = decode_split(split, classifier.preprocess, reporter=reporter, store=False, workers=data.workers,
                            strict=data.strict)
    if len(prepared) == 0:
        raise VQError(f"{dataset.name}: no images to benchmark on", usage=True)
    normalize = Normalizer(classifier.preprocess, torch.device("cpu"))
    return Images(prepared.pixels, prepared.labels, normalize), f"{dataset.name} ({split_name}, {len(prepared)} images)"


def candidates(target: str, reference: Classifier, options: BenchmarkOptions, features, folder: Path,
               skipped: list, reporter: Reporter):
    """(format name, function loading it) for each format that can run here; the others join ``skipped``."""
    from vqtool.classification.checkpoints.export_format import is_exported

    if is_exported(target):  # an export is measured as it is
        yield reference.meta.get("exported_as", "export") + ("-int8" if reference.meta.get("precision") == "int8"
                                                             else ""), lambda: load_export(target)
        return
    for name in options.formats:
        reason = unavailable(name, features)
        if reason:
            skipped.append({"format": name, "reason": reason})
            reporter.log(f"{name}: skipped ({reason})")
            continue
        yield name, loader(name, target, options, folder, reporter)


def unavailable(name: str, features) -> str | None:
    """Why ``name`` cannot run on this machine (with the line that installs what is missing), or None."""
    import importlib.util

    for package in FORMATS[name][3]:
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed: {INSTALL_LINES.get(package, INSTALL_HINT)}"
    if FORMATS[name][2] == "bf16" and not features.native_bf16:
        return "this CPU has no native bf16 (no AMX or AVX-512 BF16); OpenVINO would compute in fp32"
    return None


def loader(name: str, target: str, options: BenchmarkOptions, folder: Path, reporter: Reporter):
    """A function that exports ``target`` for ``name`` when first needed (into ``folder``) and loads it."""
    fmt, int8, hint, _ = FORMATS[name]
    if fmt is None:
        return lambda: load_checkpoint_model(target)
    file_name = FILE_NAMES[fmt].replace("model.", "model.int8.") if int8 else FILE_NAMES[fmt]
    path = folder / file_name

    def load():
        if not (path.exists()):
            build(target, fmt, int8, path, options, reporter)
        return load_export(path, hint)

    return load


def build(target: str, fmt: str, int8: bool, path: Path, options: BenchmarkOptions, reporter: Reporter) -> None:
    from vqtool.classification.export.formats import export_classifier

    export = ExportOptions(format=fmt, output=path, int8=int8, verify=False, calibrate=options.calibrate if int8 else None,
                           calibration_images=options.calibration_images if int8 else DEFAULT_CALIBRATION_IMAGES)
    export_classifier(target, export, reporter)


def load_checkpoint_model(target: str):
    """(callable, the weights file) of a checkpoint, run in fp32 channels_last as eval and predict run it."""
    from vqtool.classification.checkpoints.format import load_checkpoint

    checkpoint = load_checkpoint(target)
    model = checkpoint.model.eval().to(memory_format=torch.channels_last)

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(images.contiguous(memory_format=torch.channels_last))

    weights = Path(checkpoint.path) / "model.safetensors"
    return run, weights if weights.is_file() else None


def load_export(path, hint: str | None = None):
    """(callable, path) of an export; an IR with ``hint`` (bf16) computes in that precision."""
    from vqtool.classification.inference.exported import load_exported, load_openvino

    classifier = load_openvino(path, hint) if hint else load_exported(path)
    model = classifier.model

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(images)

    return run, Path(path)


def measure(name: str, load, images: Images, options: BenchmarkOptions, reporter: Reporter) -> dict:
    """One row: load time, size, speed at each batch size, accuracy on the images."""
    started = time.perf_counter()
    model, path = load()
    row = {"format": name, "load_seconds": round(time.perf_counter() - started, 3),
           "size_mb": round(size_of(path) / 1e6, 2) if path else None}
    for batch in options.batches:
        calls = timed_calls(model, images.batch(batch), options.seconds)
        row[f"batch{batch}_ms_median"] = round(statistics.median(calls) * 1000, 2)
        row[f"batch{batch}_ms_p90"] = round(percentile(calls, 90) * 1000, 2)
        row[f"batch{batch}_images_per_second"] = round(batch * len(calls) / sum(calls), 1)
    row["predictions"] = torch.cat([model(chunk).float().argmax(1) for chunk in images.batches(max(options.batches))])
    row["accuracy"] = round(float((row["predictions"] == images.labels).float().mean()), 4)
    reporter.log(f"{name}: {row[f'batch{max(options.batches)}_images_per_second']} img/s at batch "
                 f"{max(options.batches)}, accuracy {row['accuracy']:.4f}")
    return row


def timed_calls(model, batch: torch.Tensor, seconds: float, at_least: int = 3) -> list[float]:
    """Seconds per call, after one warm-up call, for ``seconds`` and at least ``at_least`` calls."""
    model(batch)
    calls, started = [], time.perf_counter()
    while len(calls) < at_least or time.perf_counter() - started < seconds:
        begin = time.perf_counter()
        model(batch)
        calls.append(time.perf_counter() - begin)
    return calls


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def size_of(path: Path) -> int:
    from vqtool.classification.export.formats import size_of as exported_size

    return exported_size(path)


def judge(rows: list[dict], max_drop: float) -> None:
    """Agreement and accuracy drop against the first row; the fastest (at the largest batch) within ``max_drop``."""
    if not rows:
        return
    first = rows[0]
    for row in rows:
        row["agreement"] = round(float((row["predictions"] == first["predictions"]).float().mean()), 4)
        row["accuracy_drop"] = round((first["accuracy"] - row["accuracy"]) * 100, 2)
    speed = [k for k in first if k.endswith("_images_per_second")][-1]
    eligible = [row for row in rows if row["accuracy_drop"] <= max_drop]
    fastest = max(eligible, key=lambda row: row[speed]) if eligible else None
    for row in rows:
        row["fastest"] = row is fastest
        del row["predictions"]

