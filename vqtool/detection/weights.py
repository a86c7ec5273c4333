"""Finding detector weights (``--weights``) and loading them as an Ultralytics YOLO model.

``--weights`` is a path to an Ultralytics checkpoint (``.pt``) or an exported
ONNX model, a vqtool detector run folder, or a bare official name
(``yolov8n.pt``, ``yolo11n.pt``) looked up in the weights folder
(``$VQTOOL_WEIGHTS_DIR``, default ``~/.cache/vqtool/weights``). A bare name that
is not there is downloaded into it, but only after a quick check that the
network answers; offline, the error says where to put the file.
"""

from __future__ import annotations

from pathlib import Path

from vqtool.detection.ultralytics_env import keeping_threads, load_ultralytics, weights_dir
from vqtool.errors import VQError
from vqtool.online import reachable

WEIGHT_SUFFIXES = (".pt", ".onnx")
RUN_CHECKPOINT = "model.pt"  # the best weights of a vqtool detector run, at the top of its run folder
ULTRALYTICS_DIR = "ultralytics"  # Ultralytics' own artifacts inside a detector run folder
DOWNLOAD_HOST = "github.com"  # where Ultralytics' official weights are published


def looks_like_weights(spec: str) -> bool:
    """A YOLO checkpoint, exported model or detector run folder, judged by name (nothing is loaded)."""
    path = Path(spec)
    is_run = (path / RUN_CHECKPOINT).is_file() or (path / ULTRALYTICS_DIR).is_dir()
    return path.suffix.lower() in WEIGHT_SUFFIXES or is_run


def resolve_weights(spec: str) -> Path:
    """The local file ``spec`` names, downloading an official model when it must and can."""
    path = Path(spec).expanduser()
    if path.is_dir() and (path / RUN_CHECKPOINT).is_file():
        return path / RUN_CHECKPOINT
    if path.is_file():
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise VQError(f"{spec}: not YOLO weights (expected a .pt checkpoint or an exported .onnx model)",
                          usage=True)
        return path
    if path.name != spec:  # a path, not a bare name
        raise VQError(f"{spec}: no such file", usage=True)
    local = weights_dir() / spec
    if local.is_file():
        return local
    return _download_official(spec, local)


def _download_official(name: str, target: Path) -> Path:
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    if name not in GITHUB_ASSETS_NAMES:
        raise VQError(f"{name}: no such file, and not an official Ultralytics model name", usage=True)
    if not reachable(DOWNLOAD_HOST):
        raise VQError(f"{name} is not in the weights folder {target.parent} and the network is unreachable; "
                      f"download it elsewhere and put it there (or set VQTOOL_WEIGHTS_DIR to the folder holding it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        attempt_download_asset(str(target))
    except Exception as error:  # requests, OS and Ultralytics' own errors all mean the same here
        raise VQError(f"downloading {name} into {target.parent} failed ({error})") from error
    if not target.is_file():
        raise VQError(f"downloading {name} into {target.parent} failed")
    return target


def load_detector(spec: str):
    """An Ultralytics YOLO detection model from ``--weights``; VQError when it is not one."""
    ultralytics = load_ultralytics()
    path = resolve_weights(spec)
    try:
        with keeping_threads():
            model = ultralytics.YOLO(str(path), task="detect" if path.suffix.lower() == ".onnx" else None)
    except Exception as error:  # unpickling an arbitrary file can raise nearly anything
        raise VQError(f"{path}: cannot load as an Ultralytics model ({type(error).__name__}: {error})") from error
    if model.task != "detect":
        raise VQError(f"{path}: a YOLO {model.task} model; vqtool's detection commands need a detect model",
                      usage=True)
    return model
