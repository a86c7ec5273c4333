"""Which task a command's targets belong to, and the one dispatch to it.

Each task package registers one :class:`vqtool.registry.Task` (classification,
detection, multilabel, or a plugin's). A command builds a
:class:`~vqtool.registry.Request` and calls :func:`run`; the task is chosen here,
once: ``--task`` when given, else the one task that takes a typed training option
that selects it (``--labels-from`` selects multilabel), else the first task
that owns a target (weights, a run folder, an export, a dataset), else the
default task (classification). Typed training options the chosen task does not
take are one usage error. Nothing here imports torch or Ultralytics.
"""

from __future__ import annotations

from vqtool.errors import VQError, suggest
from vqtool.registry import Request, Task, registered_tasks

CLASSIFICATION = "classification"


def get_task(name: str) -> Task:
    tasks = registered_tasks()
    if name not in tasks:
        raise VQError(f"unknown task {name!r}{suggest(name, list(tasks))}; choose from {', '.join(tasks)}",
                      usage=True)
    return tasks[name]


def task_for(*targets, typed: dict | None = None) -> Task:
    """The task of a command's targets (None entries are skipped) and typed options (see the module)."""
    tasks, typed = registered_tasks(), typed or {}
    if typed.get("task"):
        return get_task(typed["task"])
    chosen = [task for task in tasks.values() if task.selected_by & set(typed)]
    if len(chosen) == 1:
        return chosen[0]
    specs = [str(target) for target in targets if target]
    for task in tasks.values():
        if any(task.owns(spec) for spec in specs):
            return task
    return next(task for task in tasks.values() if task.default)


def task_of(*targets) -> str:
    """The name of the task of a command's targets (weights, run folders, data.yaml files, datasets)."""
    return task_for(*targets).name


def _all_options(command: str) -> frozenset:
    return frozenset().union(*(task.takes(command) for task in registered_tasks().values()))


def check_options(task: Task, command: str, typed: dict) -> None:
    """Typed training options the task does not take: one usage error naming them all."""
    refused = [name for name in typed if name in _all_options(command) and name not in task.takes(command)]
    if refused:
        names = [f"--{name.removesuffix('_name').replace('_', '-')}" for name in refused]
        verb = "does" if len(names) == 1 else "do"
        raise VQError(f"{', '.join(names)} {verb} not apply to {task.name} models", usage=True)


def run(request: Request) -> tuple[Task, dict]:
    """The command's entry point of the task of the request's targets: (the task, what it returned)."""
    # --task chooses whether typed or from a --config file (vqtool tune's best.yaml names a multilabel study's task);
    # --resume continues the task the run's args.json records
    resume = request.params.get("resume")
    task_name = request.params.get("task") or (recorded_task(resume) if resume else None)
    chosen = {**request.typed, **({"task": task_name} if task_name else {})}
    task = task_for(request.target, request.dataset, resume, typed=chosen)
    check_options(task, request.command, request.typed)
    return task, getattr(task, ENTRY_POINTS[request.command])(request)


def recorded_task(run_dir: str) -> str | None:
    """The registered task a run folder's args.json records (None for a run from before args.json named it, or for
    what is no run folder: the task is then found as for any target)."""
    from pathlib import Path

    from vqtool.runs.atomic_files import read_json

    try:
        task = read_json(Path(run_dir) / "args.json")["args"].get("task")
    except (VQError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return task if task in registered_tasks() else None


ENTRY_POINTS = {"train": "train", "finetune": "finetune", "eval": "evaluate", "confusion": "confusion"}


def export(checkpoint: str, options, reporter) -> dict:
    """Export a checkpoint or weights of any task; the summary ``vqtool export`` prints."""
    from vqtool.classification.checkpoints.export_format import is_exported

    if is_exported(checkpoint):  # model.onnx beside model.json would otherwise pass for a checkpoint
        raise VQError(f"{checkpoint}: already an exported model; export the checkpoint or weights it came from",
                      usage=True)
    return task_for(checkpoint).export(checkpoint, options, reporter)


def predict(sources, weights: str, options):
    """Predict ``sources`` with a model of any task: (the stream of records and Failures, the task, the class
    names)."""
    task = task_for(weights)
    stream, classes = task.predict(sources, weights, options)
    return stream, task, classes


def is_classifier(spec: str) -> bool:
    """A vqtool classification checkpoint (run folder, model.safetensors, model.json) or an exported classifier."""
    from vqtool.classification.checkpoints.paths import resolve_checkpoint
    from vqtool.classification.checkpoints.export_format import is_exported_classifier

    if is_exported_classifier(spec):
        return True
    try:
        resolve_checkpoint(spec)
    except VQError:
        return False
    return True


def require_detector(weights: str) -> None:
    """A usage error, in one line, when ``weights`` given where a detector is needed hold a classifier."""
    if is_classifier(weights):
        raise VQError(f"{weights}: a classifier, not a detector; classify images with `vqtool predict`", usage=True)
