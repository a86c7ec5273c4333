"""Finding detector weights (``--weights``) and loading them as an Ultralytics YOLO model.

``--weights`` is a path to an Ultralytics checkpoint (``.pt``) or an exported
ONNX model, a vqtool detector run folder, or a bare official name
(``yolov8n.pt``, ``yolo11n.pt``) looked up in the weights folder
(``$VQTOOL_WEIGHTS_DIR``, default ``~/.cache/vqtool/weights``). A bare name that
is not there is downloaded into it, but only after a quick check that the
network answers; offline, the error says where to put the file.

A ``.pt`` is a pickle: it is checked (:mod:`vqtool.pickles`) before Ultralytics
unpickles it, and its model yaml before Ultralytics can rebuild the model from
it (finetune, resume), since that evals the yaml's activation and calls each
layer's module by name.
"""

from __future__ import annotations

from pathlib import Path

from vqtool.detection.ultralytics_env import keeping_threads, load_ultralytics, weights_dir
from vqtool.errors import VQError, first_line
from vqtool.online import reachable
from vqtool.pickles import TRUST_HINT, YOLO_CHECKPOINT, UnsafeFile, check, trusted

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
        raise VQError(f"downloading {name} into {target.parent} failed ({first_line(error)})") from error
    if not target.is_file():
        raise VQError(f"downloading {name} into {target.parent} failed")
    return target


def load_detector(spec: str):
    """An Ultralytics YOLO detection model from ``--weights``; VQError when it is not one or is not safe to open."""
    model, path = load_yolo(spec, exported_task="detect")
    if model.task == "classify":
        raise VQError(f"{path}: a YOLO classification model; classify images with `vqtool predict`", usage=True)
    if model.task != "detect":
        raise VQError(f"{path}: a YOLO {model.task} model; vqtool's detection commands need a detect model",
                      usage=True)
    if hasattr(model.model, "names"):  # a checkpoint's model (an export's names come with its runtime)
        _check_class_names(model.model.names, path)
    return model


def _check_class_names(names, path) -> None:
    """A checkpoint's class names: a non-empty mapping (or list) of class numbers to non-empty names, as every
    command prints them (Ultralytics fails deep inside otherwise, or prints empty labels)."""
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise VQError(f"{path}: its class names are missing or empty ({names!r:.60}); not a usable detector")
    bad = next((key for key, name in names.items() if not isinstance(key, int) or not str(name).strip()), None)
    if bad is not None or sorted(names) != list(range(len(names))):
        raise VQError(f"{path}: its class names are not a name for each class number 0..{len(names) - 1} "
                      f"({names!r:.60}); not a usable detector")


def load_yolo(spec: str, exported_task: str):
    """(Ultralytics YOLO model, its file), the checkpoint's pickles and model yaml checked first.

    An exported model does not say its task: it is taken to be ``exported_task``.
    """
    ultralytics = load_ultralytics()
    path = resolve_weights(spec)
    checkpoint = path.suffix.lower() == ".pt"
    if checkpoint:
        check_checkpoint(path)
    try:
        with keeping_threads():
            model = ultralytics.YOLO(str(path), task=None if checkpoint else exported_task)
    except VQError:  # the guarded loaders' refusals
        raise
    except Exception as error:  # unpickling an arbitrary file can raise nearly anything
        raise VQError(f"{path}: cannot load as an Ultralytics model ({type(error).__name__}: {first_line(error)})") from error
    if checkpoint:
        check_model_spec(getattr(model.model, "yaml", None), path)
    return model, path


def check_checkpoint(path: Path) -> None:
    """Refuse a .pt whose pickles name anything a genuine Ultralytics checkpoint does not (nothing is unpickled)."""
    load_ultralytics()  # the check imports the ultralytics.nn classes it names: prepared, as everywhere
    check(path, YOLO_CHECKPOINT)


def check_model_spec(spec, source) -> None:
    """Refuse a model yaml (a checkpoint's, or --model) that would run or load anything when Ultralytics builds it.

    Ultralytics' parse_model evals ``activation`` and calls each layer's module, looked up among its own
    globals, with the layer's arguments: only ``nn.Name(literals)`` activations, modules that are torch.nn or
    Ultralytics layer classes building from literal arguments alone, and literal layer rows pass. Nothing else
    is followed: a layer naming a model class (which would read another yaml) or TorchVision (which loads
    weights) is refused.
    """
    problem = None if trusted() else _spec_problem(spec)
    if problem:
        raise UnsafeFile(f"{source}: refused: its model yaml {problem}, which Ultralytics would run as code "
                         f"when it builds the model ({TRUST_HINT})")


# Ultralytics layer classes that load weights when built (torchvision's, through torch.hub, or a download)
LOADING_LAYERS = frozenset({"TorchVision"})


def _spec_problem(spec) -> str | None:
    if not isinstance(spec, dict):
        return "is not a mapping"
    if not _is_plain(spec):  # a checkpoint's yaml is unpickled: it could hold objects parse_model would use
        return "holds values other than numbers, strings, lists and mappings"
    activation = spec.get("activation")
    if activation and not _is_activation(activation):
        return f"has activation {activation!r:.80}"
    layers = spec.get("backbone"), spec.get("head")
    if not all(isinstance(part, list) for part in layers):
        return "has no backbone and head layers"
    return next(filter(None, map(_layer_problem, layers[0] + layers[1])), None)


def _layer_problem(layer) -> str | None:
    """What is wrong with one ``[from, repeats, module, args]`` row, or None."""
    if not (isinstance(layer, list) and len(layer) == 4):
        return f"has a layer that is not [from, repeats, module, args] ({layer!r:.80})"
    origin, repeats, module, args = layer
    if not _is_layer_module(module):
        return f"has layer module {module!r:.80}"
    if not (_is_literal(origin) and isinstance(repeats, int) and isinstance(args, list) and _is_literal(args)):
        return f"has a {module} layer whose from, repeats or args are not plain numbers, strings and lists"
    return None


def _is_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return all(map(_is_plain, value))
    return _is_literal(value)


def _is_literal(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(map(_is_literal, value))
    return value is None or isinstance(value, (bool, int, float, str))


def _is_activation(text) -> bool:
    """``nn.Name(literals)`` or ``torch.nn.Name(literals)`` naming a torch.nn module (as Ultralytics' own
    restricted loader demands)."""
    import ast

    import torch

    try:
        call = ast.parse(text, mode="eval").body
        for argument in [*call.args, *(keyword.value for keyword in call.keywords)]:
            ast.literal_eval(argument)
    except (AttributeError, SyntaxError, TypeError, ValueError):  # not a string, not a call, not literals
        return False
    path = ast.unparse(call.func).split(".")
    return (all(keyword.arg for keyword in call.keywords) and path[:-1] in (["nn"], ["torch", "nn"])
            and _is_module_class(getattr(torch.nn, path[-1], None)))


def _is_layer_module(name) -> bool:
    """Whether a yaml layer's module, looked up as parse_model looks it up (``nn.Name`` in torch.nn, anything else
    among ultralytics.nn.tasks' globals), is a torch.nn module or an Ultralytics layer that loads nothing."""
    import torch
    from ultralytics.nn import tasks

    if not isinstance(name, str):
        return False
    if name.startswith("nn."):
        return _is_module_class(getattr(torch.nn, name[3:], None))
    found = vars(tasks).get(name)
    return (_is_module_class(found) and found.__module__.startswith("ultralytics.nn.modules.")
            and name not in LOADING_LAYERS)


def _is_module_class(found) -> bool:
    import torch

    return isinstance(found, type) and issubclass(found, torch.nn.Module)
