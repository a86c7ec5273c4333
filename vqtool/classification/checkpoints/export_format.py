"""What an exported classifier carries so it can be used without its checkpoint.

One JSON document, stored under the key ``vqtool`` in an ONNX model's
``metadata_props``, as the extra file ``vqtool.json`` of a TorchScript
archive, and as ``vqtool.json`` in an OpenVINO IR folder (``NAME.openvino/``
with ``model.xml`` and ``model.bin``). It holds the class names, the whole preprocessing recipe (input size,
channels, mean and std, resize and interpolation), the input and output
tensors (the output is logits), and the dataset the model was trained on.
It also holds digests of what it describes (the ONNX graph; the IR's files),
so that a tampered or truncated file is refused at load rather than run.

Reading it needs no torch: the commands use :func:`read_metadata` to tell an
exported classifier from YOLO weights before anything heavy is imported, and
:func:`check_options` and :func:`output_path` refuse what cannot be exported first.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path

from vqtool import __version__
from vqtool.errors import VQError
from vqtool.exporting import DEFAULT_CALIBRATION_IMAGES, ExportOptions
from vqtool.runs.folder import check_output

FORMAT = "vqtool-export"
FORMAT_VERSION = 1
ONNX_KEY = "vqtool"
EXTRA_FILE = "vqtool.json"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
TORCHSCRIPT_SUFFIXES = (".ts", ".pt")
OPENVINO_SUFFIX = ".openvino"  # an IR folder: model.xml, model.bin, vqtool.json
IR_FILES = ("model.xml", "model.bin")
SUFFIXES = {"onnx": (".onnx",), "torchscript": TORCHSCRIPT_SUFFIXES,  # eval and confusion pick the runtime by suffix
            "openvino": (OPENVINO_SUFFIX,)}
INT8_FORMATS = ("onnx", "openvino")
# The tasks whose models map images to one logit per class: what an export holds and eval loads. A
# multi-label export adds the per-label thresholds chosen on val.
LOGIT_TASKS = ("classification", "multilabel")


def describe(checkpoint_meta: dict, preprocess: dict, *, batch: int | None, precision: str, exported_as: str) -> dict:
    """The document embedded in an exported classifier; ``batch`` None means any batch size."""
    side, channels = preprocess["size"], preprocess["channels"]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vqtool_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "exported_as": exported_as,
        "task": checkpoint_meta.get("task", "classification"),
        **({"thresholds": checkpoint_meta["thresholds"]} if "thresholds" in checkpoint_meta else {}),
        "architecture": checkpoint_meta["architecture"],
        "classes": checkpoint_meta["classes"],
        "preprocess": preprocess,
        # The model takes images already normalised with the preprocess mean and std, NCHW float32.
        "input": {"name": INPUT_NAME, "shape": [batch or "batch", channels, side, side], "dtype": "float32",
                  "normalized": True},
        "output": {"name": OUTPUT_NAME, "kind": "logits", "shape": [batch or "batch", len(checkpoint_meta["classes"])]},
        "precision": precision,
        "dataset": checkpoint_meta.get("dataset"),
    }


def read_metadata(path: str | Path) -> dict | None:
    """The vqtool document of an exported ONNX or TorchScript file or OpenVINO IR folder, or None if it has none."""
    path = ir_folder(path) or Path(path)
    if path.suffix.lower() == OPENVINO_SUFFIX:
        text = _read_text(path / EXTRA_FILE)
    elif not path.is_file():
        return None
    elif (suffix := path.suffix.lower()) == ".onnx":
        text = _onnx_property(path)
    elif suffix in TORCHSCRIPT_SUFFIXES:
        text = _torchscript_extra_file(path)
    else:
        return None
    if text is None:
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) and document.get("format") == FORMAT else None


def ir_folder(path: str | Path) -> Path | None:
    """The IR folder of ``path`` (the folder itself, or its model.xml), or None when it is not one."""
    path = Path(path)
    if path.suffix.lower() == ".xml" and path.parent.suffix.lower() == OPENVINO_SUFFIX:
        path = path.parent
    return path if path.suffix.lower() == OPENVINO_SUFFIX and path.is_dir() else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def checked_metadata(path: str | Path) -> dict:
    """The document of an exported classifier; VQError when the file is not one this vqtool can use, or no longer
    matches the digests recorded at export (tampered or truncated)."""
    if not Path(path).is_file() and ir_folder(path) is None:
        raise VQError(f"{path}: no such file", usage=True)
    document = read_metadata(path)
    if document is None:
        raise VQError(f"{path}: not a model exported by vqtool export (no '{ONNX_KEY}' metadata)", usage=True)
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise VQError(f"{path}: exported by a newer vqtool ({document.get('vqtool_version')}); upgrade vqtool")
    if document.get("task") not in LOGIT_TASKS:
        raise VQError(f"{path}: a {document.get('task')} model; eval and confusion take classifiers", usage=True)
    check_digests(path, document)
    return document


def check_digests(path: str | Path, document: dict) -> None:
    """Refuse a file whose content differs from what was exported (files written before digests pass)."""
    digests = document.get("sha256") or {}
    folder = ir_folder(path)
    for name, expected in digests.items():
        if folder is not None:
            actual = file_digest(folder / name)
        elif name == "onnx_graph":
            actual = onnx_graph_digest(Path(path))
        else:
            continue
        if actual != expected:
            raise VQError(f"{path}: {name} does not match the digest recorded at export (modified or truncated); "
                          f"export it again")


def file_digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:
        return None


def onnx_graph_digest(path: Path) -> str:
    """The digest of an ONNX file's graph and opsets: all it computes, without the metadata that carries the digest."""
    import onnx

    model = onnx.load(str(path))
    return graph_digest(model)


def graph_digest(model) -> str:
    digest = hashlib.sha256(model.graph.SerializeToString(deterministic=True))
    for opset in model.opset_import:
        digest.update(opset.SerializeToString(deterministic=True))
    return digest.hexdigest()


def is_exported_classifier(path: str | Path) -> bool:
    document = read_metadata(path)
    return document is not None and document.get("task") == "classification"


def _onnx_property(path: Path) -> str | None:
    from vqtool.exporting import require

    onnx = require("onnx", f"reading {path.name}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and OS errors: the file is not a readable ONNX model
        raise VQError(f"{path}: not a readable ONNX model ({type(error).__name__})", usage=True) from error
    return next((p.value for p in model.metadata_props if p.key == ONNX_KEY), None)


def _torchscript_extra_file(path: Path) -> str | None:
    """TorchScript archives are zip files keeping extra files under ``<archive>/extra/``."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        name = next((n for n in archive.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")), None)
        return None if name is None else archive.read(name).decode()


def embed_in_onnx(path: Path, document: dict) -> None:
    """Add the document (with the graph's digest) to an ONNX file's metadata_props, in place."""
    import onnx

    model = onnx.load(str(path))
    for entry in [p for p in model.metadata_props if p.key == ONNX_KEY]:
        model.metadata_props.remove(entry)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_KEY, json.dumps({**document, "sha256": {"onnx_graph": graph_digest(model)}})
    onnx.save(model, str(path))


def write_ir_document(folder: Path, document: dict) -> None:
    """vqtool.json of an IR folder: the document and the digests of the IR's files."""
    digests = {name: file_digest(folder / name) for name in IR_FILES}
    (folder / EXTRA_FILE).write_text(json.dumps({**document, "sha256": digests}))


def is_exported(path: str | Path) -> bool:
    """An already exported model (ONNX, an IR folder, or TorchScript with vqtool metadata), which cannot be
    exported again."""
    if ir_folder(path) is not None:
        return True
    return Path(path).is_file() and (Path(path).suffix.lower() == ".onnx" or read_metadata(path) is not None)


def check_options(options: ExportOptions) -> None:
    if options.format not in SUFFIXES:
        *others, last = SUFFIXES
        raise VQError(f"--format {options.format}: a classification checkpoint exports to "
                      f"{', '.join(others)} or {last}", usage=True)
    if options.format == "torchscript" and options.opset is not None:
        raise VQError("--opset applies to ONNX exports", usage=True)
    if options.format == "torchscript" and not options.dynamic_batch:
        raise VQError("--static applies to ONNX exports; a TorchScript model takes any batch size", usage=True)
    if options.format == "openvino" and options.opset is not None:
        raise VQError("--opset applies to ONNX exports", usage=True)
    if options.int8 and options.format not in INT8_FORMATS:
        raise VQError(f"--int8 applies to {' and '.join(INT8_FORMATS)} exports", usage=True)
    if options.int8 and options.half:
        raise VQError("--int8 and --half: choose one precision", usage=True)
    if (options.calibrate is not None or options.calibration_images != DEFAULT_CALIBRATION_IMAGES) \
            and not options.int8:
        raise VQError("--calibrate and --calibration-images apply to --int8 exports", usage=True)


def output_path(checkpoint_dir: Path, options: ExportOptions) -> Path:
    """-o, or model.onnx / model.int8.onnx / model.ts / model.openvino / model.int8.openvino beside the checkpoint;
    refused where it would replace a file unasked."""
    suffixes = SUFFIXES[options.format]
    if options.output is None:
        path = checkpoint_dir / f"model{'.int8' if options.int8 else ''}{suffixes[0]}"
        check_output(path, overwrite=options.overwrite, option="the export")
        return path
    if options.output.suffix.lower() not in suffixes:
        raise VQError(f"-o {options.output}: a {options.format} file must end in {' or '.join(suffixes)} "
                      f"(eval and confusion choose the runtime by the suffix)", usage=True)
    check_output(options.output, overwrite=options.overwrite)
    return options.output
