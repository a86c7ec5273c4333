"""Training and fine-tuning YOLO detectors through Ultralytics, in vqtool's run folder layout.

A detector run folder holds::

    args.json     what was asked
    model.pt      the best weights (an Ultralytics checkpoint: detect, eval and finetune take the folder)
    metrics.csv   one row per epoch: losses, precision, recall, map50, map50_95, lr, seconds
    curves.png    losses and mAP per epoch
    ultralytics/  Ultralytics' own artifacts (weights/best.pt and last.pt, results.csv, args.yaml, plots)

Options the user did not type keep Ultralytics' defaults (vqtool's defaults
are tuned for classifiers); ``--epochs``, ``--imgsz``, ``--device`` and
``--seed`` always apply. Ultralytics' last.pt and best.pt, metrics.csv and
curves.png change together after each epoch, as one commit
(:mod:`vqtool.detection.checkpoints`, :mod:`vqtool.runs.commit`): a run killed at
any instant reads as one epoch. ``--resume`` continues with Ultralytics' own
resume on the run's recorded data.yaml, writing only inside the run folder given
(whatever save_dir the checkpoint records); a run killed after its last epoch but
before model.pt was written is finished without training (model.pt copied,
best.pt validated on that data.yaml).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vqtool import __version__
from vqtool.choices import DEFAULT_DEVICE
from vqtool.detection.checkpoints import StagedCheckpoints, committing_trainer
from vqtool.detection.data import YoloDataset, no_valid_images_as_error, usable_images
from vqtool.detection.evaluate import box_metrics
from vqtool.detection.predict import ultralytics_device
from vqtool.detection.ultralytics_trackers import ultralytics_tracking
from vqtool.detection.ultralytics_env import keeping_threads, load_ultralytics
from vqtool.detection.weights import RUN_CHECKPOINT, ULTRALYTICS_DIR, check_checkpoint, check_model_spec, load_detector
from vqtool.plots import plot_panels
from vqtool.runs.status import history as run_history, job_status, training_status
from vqtool.runs.commit import commit, recover
from vqtool.runs.folder import metrics_csv, new_run_dir, write_args
from vqtool.runs.atomic_files import atomic_save, read_json
from vqtool.runs.trackers import TrackingOptions, check_resumed
from vqtool.errors import VQError, first_line
from vqtool.reporter import Reporter

DEFAULT_MODEL = "yolov8n.yaml"
TASK = "detection"  # args.json's task, and the name of its section of the run's options
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}
SCHEDULERS = {"cosine": {"cos_lr": True}, "none": {"lrf": 1.0}}  # Ultralytics' default decays linearly
NO_AUGMENTATION = {"mosaic": 0.0, "mixup": 0.0, "copy_paste": 0.0, "fliplr": 0.0, "hsv_h": 0.0, "hsv_s": 0.0,
                   "hsv_v": 0.0, "translate": 0.0, "scale": 0.0}
AUGMENTATION = {"none": NO_AUGMENTATION, "basic": {"mosaic": 0.0}, "strong": {}}  # strong: Ultralytics' defaults
PLOTS = True  # Ultralytics' own plots (labels, batches, PR curves, confusion): about 6 s a run on a small CPU


@dataclass(frozen=True)
class DetectorTraining:
    """How to train a detector. ``None`` means Ultralytics' default and is not passed on.

    vqtool's own defaults are tuned for classifiers, so the commands pass only
    what the user typed; epochs, seed and device always apply.
    """

    epochs: int
    seed: int = 0
    device: str = DEFAULT_DEVICE
    imgsz: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    early_stop: int | None = None
    workers: int | None = None
    optimizer: str | None = None
    scheduler: str | None = None
    augment: str | None = None


def train_detector(dataset_spec: str, training: DetectorTraining, *, model_name: str | None = None,
                   out_dir: str | None = None, reporter: Reporter, tracking: TrackingOptions | None = None) -> dict:
    """``vqtool train DATA.yaml [--model yolov8n.yaml]``: a detector from scratch."""
    model_name = model_name or DEFAULT_MODEL
    if tracking:
        tracking.check()
    if not model_name.lower().endswith((".yaml", ".yml")):
        raise VQError(f"--model {model_name}: training a detector from scratch takes a model yaml such as "
                      f"{DEFAULT_MODEL}; to start from weights use vqtool finetune DATA.yaml --weights W.pt",
                      usage=True)
    ultralytics_train_args(training)  # its usage errors before the model is built
    model = _model_from_yaml(model_name)
    return _train(model, dataset_spec, training, out_dir, reporter, "train", {"model": model_name}, tracking)


def _model_from_yaml(model_name: str):
    """An untrained Ultralytics model built from a model yaml, checked first (building it evals parts of it)."""
    ultralytics = load_ultralytics()
    from ultralytics.nn.tasks import yaml_model_load

    try:
        spec = yaml_model_load(model_name)
    except Exception as error:  # a missing file, YAML that does not parse or is not a mapping: Ultralytics' own errors
        raise VQError(f"--model {model_name}: not a YOLO model yaml ({first_line(error)})", usage=True) from error
    check_model_spec(spec, model_name)
    try:
        with keeping_threads():
            return ultralytics.YOLO(model_name, task="detect")
    except VQError:
        raise
    except Exception as error:  # layers that do not fit together fail anywhere in parse_model
        raise VQError(f"--model {model_name}: Ultralytics cannot build this model yaml ({type(error).__name__}: "
                      f"{first_line(error)})", usage=True) from error


def finetune_detector(dataset_spec: str, weights: str, freeze: str | int | None, training: DetectorTraining, *,
                      out_dir: str | None = None, reporter: Reporter, tracking: TrackingOptions | None = None) -> dict:
    """``vqtool finetune DATA.yaml --weights W.pt --freeze backbone|N``."""
    if tracking:
        tracking.check()
    if str(weights).lower().endswith(".onnx"):
        raise VQError("an exported ONNX model cannot be fine-tuned; use its .pt checkpoint", usage=True)
    ultralytics_train_args(training)  # its usage errors before the weights load
    model = load_detector(weights)
    check_rebuilds(model)
    return _train(model, dataset_spec, training, out_dir, reporter, "finetune",
                  {"weights": str(model.ckpt_path), "freeze": frozen_layers(model, freeze)}, tracking)


def check_rebuilds(model) -> None:
    """Ultralytics rebuilds a checkpoint's model from its (checked) yaml to train it: a yaml whose layers do not
    fit together fails here, in one line, before anything is written."""
    import copy

    from ultralytics.nn.tasks import DetectionModel

    spec = copy.deepcopy(model.model.yaml)  # parse_model rewrites the rows it reads
    try:
        with keeping_threads():
            DetectionModel(spec, ch=spec.get("channels", 3), nc=len(model.names), verbose=False)
    except Exception as error:  # parse_model and the layers' constructors fail in any way
        raise VQError(f"{model.ckpt_path}: its model yaml does not build a model ({type(error).__name__}: "
                      f"{first_line(error)})") from error


def frozen_layers(model, freeze) -> int:
    """--freeze as a layer count: ``backbone`` is every layer of the model yaml's backbone section."""
    if freeze in (None, "", "none"):
        return 0
    if str(freeze) == "backbone":
        return len(model.model.yaml["backbone"])
    if str(freeze).isdigit():
        return int(freeze)
    raise VQError(f"--freeze {freeze}: for a detector use backbone, none or a number of layers", usage=True)


def replayed_options(training: DetectorTraining, record: dict) -> dict:
    """What args.json's ``detection`` section holds: the run's options by their option names (``model``,
    ``weights``, ``freeze``, ``epochs``, ``imgsz``, ``batch_size`` ...), those left to Ultralytics left out, so that
    `--config RUN/args.json` (which reads a run's own task section) trains the same detector again."""
    return {**record, **{name: value for name, value in asdict(training).items() if value is not None}}


# DetectorTraining field -> Ultralytics train argument, for the fields passed on as they are
PLAIN_ARGS = {"epochs": "epochs", "seed": "seed", "imgsz": "imgsz", "batch_size": "batch", "lr": "lr0",
              "weight_decay": "weight_decay", "early_stop": "patience", "workers": "workers"}


def ultralytics_train_args(training: DetectorTraining) -> dict:
    """The training options as Ultralytics train arguments, leaving out those left to Ultralytics."""
    args = {theirs: getattr(training, ours) for ours, theirs in PLAIN_ARGS.items()
            if getattr(training, ours) is not None}
    args.update(device=ultralytics_device(training.device), amp=safe_amp(training.device), plots=PLOTS)
    if training.optimizer is not None:
        args["optimizer"] = OPTIMIZERS[training.optimizer]
    if training.scheduler is not None:
        if training.scheduler not in SCHEDULERS:
            raise VQError(f"--scheduler {training.scheduler}: YOLO detectors take {' or '.join(SCHEDULERS)}",
                          usage=True)
        args.update(SCHEDULERS[training.scheduler])
    if training.augment is not None:
        args.update(AUGMENTATION[training.augment])
    return args


def safe_amp(device: str):
    """Mixed precision without Ultralytics' AMP check, which downloads a model: bf16 on GPUs that have it."""
    import torch

    from vqtool.compute.device import resolve_device

    if resolve_device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return False


def _train(model, dataset_spec: str, training: DetectorTraining, out_dir: str | None, reporter: Reporter,
           command: str, record: dict, tracking: TrackingOptions | None) -> dict:
    from vqtool.data import load_dataset

    args = ultralytics_train_args(training) | ({"freeze": record["freeze"]} if "freeze" in record else {})
    started = time.perf_counter()
    dataset = load_dataset(dataset_spec)
    if not isinstance(dataset, YoloDataset):
        raise VQError(f"{dataset_spec}: not a detection dataset", usage=True)
    for split in ("train", "val"):  # before the run folder exists: unusable data leaves nothing behind
        if split in dataset.splits:
            usable_images(dataset, split, reporter)
    run_dir = new_run_dir(command, out_dir)
    write_args(run_dir, command, {"dataset": str(dataset.yaml), "task": TASK, **record,
                                  TASK: replayed_options(training, record), "ultralytics": args})
    reporter.log(f"{command} {record.get('model') or record.get('weights')} on {dataset.name} "
            f"({', '.join(dataset.classes)}); run folder {run_dir}")
    recorder = EpochRecorder(run_dir, reporter, model=record.get("model") or record["weights"], dataset=dataset.name)
    recorder.attach(model)
    tracked = ultralytics_tracking(model, run_dir, tracking, experiment_default=dataset.name, reporter=reporter)
    with training_status(run_dir, command=command, model=record.get("model") or record["weights"],
                         dataset=dataset.name, epochs=args["epochs"]):
        with keeping_threads(), no_valid_images_as_error(dataset), tracked:
            model.train(data=str(dataset.yaml), project=str(run_dir.resolve()), name=ULTRALYTICS_DIR,
                        exist_ok=True, trainer=committing_trainer(model, recorder.checkpoints), **args)
        return _trained(run_dir, recorder, model, started, {"dataset": dataset.name, **record})


def resume_detector(run_dir: str, *, reporter: Reporter, tracking: TrackingOptions | None = None) -> dict:
    """Continue an interrupted detector run from its last completed epoch (Ultralytics' own resume)."""
    started = time.perf_counter()
    run = Path(run_dir)
    check_resumed(tracking, run)
    _refuse_links_out(run)
    recover(run)  # an epoch whose commit was switched in is installed first: last.pt may be among its files
    last = run / ULTRALYTICS_DIR / "weights" / "last.pt"
    if not last.is_file():
        raise VQError(f"{run_dir}: no detector training to resume (no {last.relative_to(run)})", usage=True)
    written = read_json(run / "args.json")
    recorded = written["args"]
    data = recorded_data(run, recorded)
    model = load_detector(str(last))
    check_resumable(model.ckpt, last)
    check_rebuilds(model)
    _check_resumed_files(last, data)
    record = {"dataset": Path(data).stem, **{k: v for k, v in recorded.items() if k in ("model", "weights", "freeze")}}
    recorder = EpochRecorder(run, reporter, history=run_history(run),
                             model=record.get("model") or record.get("weights") or "", dataset=record["dataset"])
    model_name = record.get("model") or record.get("weights")
    if training_finished(model.ckpt):
        reporter.log(f"resuming {run_dir}: training ended after epoch {len(recorder.history)}; "
                     f"writing {RUN_CHECKPOINT}")
        with job_status(run, model=model_name, dataset=record["dataset"]):
            return _finish_trained(run, recorder, data, started, record)
    recorder.attach(model)
    reporter.log(f"resuming {run_dir} after epoch {len(recorder.history)}")
    tracked = ultralytics_tracking(model, run, tracking, experiment_default=record["dataset"], reporter=reporter)
    with training_status(run, command=written.get("command", "train"), model=model_name, dataset=record["dataset"],
                         epochs=recorded.get("ultralytics", {}).get("epochs", "?")):
        with keeping_threads(), tracked:
            # the run's own data.yaml, never Ultralytics' default dataset; its own folder, never the save_dir
            # last.pt records (a copied run would write into the original, a crafted one anywhere)
            model.train(resume=True, data=data, save_dir=str((run / ULTRALYTICS_DIR).resolve()),
                        trainer=committing_trainer(model, recorder.checkpoints))
        return _trained(run, recorder, model, started, record)


def _refuse_links_out(run: Path) -> None:
    """Resume writes only inside the run folder: its Ultralytics folders must be folders of its own, not links."""
    for folder in (run / ULTRALYTICS_DIR, run / ULTRALYTICS_DIR / "weights"):
        if folder.is_symlink():
            raise VQError(f"{folder} is a symbolic link to {os.readlink(folder)}; vqtool resumes a run only in its "
                          f"own folder (copy the files in instead of linking them)")


def _check_resumed_files(last: Path, data: str | None) -> None:
    """What Ultralytics reads on resume besides last.pt: best.pt (unpickled when training ends, then copied to
    model.pt) and the run's dataset, checked as a dataset argument is (its label caches are pickles)."""
    from vqtool.data import load_dataset

    best = last.with_name("best.pt")
    if best.is_file():
        check_checkpoint(best)
    if data:
        load_dataset(data)


def check_resumable(checkpoint: dict | None, last: Path) -> None:
    """Refuse a last.pt whose training state would make Ultralytics' resume read anything but the run's own files
    or download anything. vqtool never trains with a teacher, pretrained weights by name, a URL or AMP's check."""
    problem = _resume_problem(checkpoint or {})
    if problem:
        raise VQError(f"{last}: refused: its training state {problem}; resuming reads only the run's own files "
                      f"and downloads nothing")


def _resume_problem(checkpoint: dict) -> str | None:
    from ultralytics.nn.tasks import DetectionModel

    args = checkpoint.get("train_args") or {}
    models = [checkpoint.get(key) for key in ("model", "ema") if checkpoint.get(key) is not None]
    if args.get("distill_model") or any(type(model) is not DetectionModel for model in models):
        return "names a distillation teacher or a model other than a detector"
    if not isinstance(args.get("pretrained", True), bool):
        return f"names pretrained weights {args['pretrained']!r:.80}"
    url = next((value for value in args.values() if isinstance(value, str) and "://" in value), None)
    if url:
        return f"names the URL {url!r:.80}"
    if args.get("amp") is True:
        return "asks for Ultralytics' AMP check, which downloads a model on a GPU"
    return None


def recorded_data(run: Path, recorded: dict) -> str:
    """The data.yaml a run was trained on, as args.json records it; VQError when it is gone."""
    data = recorded.get("dataset")
    if not data or not Path(data).is_file():
        raise VQError(f"{run}: the run was trained on {data or 'a data.yaml args.json does not name'}, which no "
                      f"longer exists; put it back to resume")
    return str(data)


def training_finished(checkpoint: dict | None) -> bool:
    """Whether Ultralytics' last.pt has no epoch left: stripped after training (epoch -1), or of the last epoch."""
    checkpoint = checkpoint or {}
    epoch = checkpoint.get("epoch", -1)
    epochs = (checkpoint.get("train_args") or {}).get("epochs")
    return epoch < 0 or checkpoint.get("optimizer") is None or (epochs is not None and epoch + 1 >= epochs)


def _finish_trained(run: Path, recorder: "EpochRecorder", data: str, started: float, record: dict) -> dict:
    """Finish a run whose training is over: the best weights validated on the run's data, as Ultralytics'
    final validation would have."""
    from vqtool.detection.evaluate import validate

    validation = validate(str(best_weights(run)), data, split="val")
    # Ultralytics' fitness, which chose best.pt, is mAP50-95 (its stopper's own record is stripped from last.pt)
    best = max(recorder.history, key=lambda row: row["map50_95"], default=None)
    return _finish(run, len(recorder.history), best["epoch"] if best else None,
                   box_metrics(validation.metrics.results_dict), started, record)


def best_weights(run: Path) -> Path:
    weights = run / ULTRALYTICS_DIR / "weights"
    return weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"


def _trained(run_dir: Path, recorder: "EpochRecorder", model, started: float, record: dict) -> dict:
    """Finish a run Ultralytics has just trained: the metrics of its final validation of the best weights."""
    # epochs before a resume are the early stopper's to remember (it is saved in the checkpoint)
    best_epoch = recorder.best_epoch or model.trainer.stopper.best_epoch
    return _finish(run_dir, len(recorder.history), best_epoch, box_metrics(model.metrics.results_dict), started,
                   record)


def _finish(run_dir: Path, epochs: int, best_epoch, metrics: dict, started: float, record: dict) -> dict:
    """Copy the best weights to the top of the run folder; the summary document (metrics of those weights)."""
    best = best_weights(run_dir)
    atomic_save(run_dir / RUN_CHECKPOINT, lambda tmp: shutil.copyfile(best, tmp))
    return {"run_dir": str(run_dir), "checkpoint": str(run_dir / RUN_CHECKPOINT), **record, "epochs": epochs,
            "best_epoch": best_epoch, **metrics, "seconds": round(time.perf_counter() - started, 2),
            "vqtool_version": __version__}


class EpochRecorder:
    """Ultralytics callbacks that keep vqtool's conventions: a line per epoch, metrics.csv and curves.png.

    On a terminal each epoch also shows a progress bar over its batches.
    """

    def __init__(self, run_dir: Path, reporter: Reporter, history: list[dict] | None = None, model: str = "",
                 dataset: str = ""):
        self.run_dir = Path(run_dir)
        self.title = f"{self.run_dir.name}: {Path(model).name} on {dataset}"  # what curves.png shows
        self.reporter = reporter
        self.history = history or []
        self.best_epoch = None
        self._bar = contextlib.ExitStack()
        self._advance = None
        self._trained = False
        self.checkpoints = StagedCheckpoints(self.run_dir)

    def attach(self, model) -> None:
        model.add_callback("on_train_epoch_start", self.epoch_started)
        model.add_callback("on_train_batch_end", lambda trainer: self._advance and self._advance())
        model.add_callback("on_train_epoch_end", self.training_done)
        model.add_callback("on_fit_epoch_end", self.epoch_done)

    def epoch_started(self, trainer) -> None:
        self._advance = self._bar.enter_context(
            self.reporter.progress(f"epoch {trainer.epoch + 1}/{trainer.epochs}", len(trainer.train_loader)))

    def training_done(self, trainer) -> None:
        self._bar.close()
        self._trained = True

    def epoch_done(self, trainer) -> None:
        if not self._trained:  # Ultralytics' final validation of best.pt, not an epoch
            return
        self._trained = False
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        row = {"epoch": trainer.epoch + 1, "lr": float(trainer.lr["lr/pg0"]),
               **{key.replace("/", "_"): float(value) for key, value in losses.items()},
               **{key.replace("/", "_"): float(value) for key, value in trainer.metrics.items()
                  if key.startswith("val/")},
               **box_metrics(trainer.metrics), "seconds": round(float(trainer.epoch_time or 0), 3)}
        self.history.append(row)
        if trainer.fitness is not None and trainer.fitness == trainer.best_fitness:
            self.best_epoch = row["epoch"]
        history = list(self.history)
        commit(self.run_dir, {"metrics.csv": lambda path: Path(path).write_text(metrics_csv(history)),
                              "curves.png": lambda path: plot_detection_curves(path, history, self.title)},
               staging=self.checkpoints.take())
        self.reporter.log(f"epoch {row['epoch']:>{len(str(trainer.epochs))}}/{trainer.epochs}  "
                     f"train loss {_total(row, 'train_'):.4f}  val loss {_total(row, 'val_'):.4f}  "
                     f"P {row['precision']:.3f} R {row['recall']:.3f} mAP50 {row['map50']:.3f} "
                     f"mAP50-95 {row['map50_95']:.3f}  {row['seconds']:.1f}s")


def _total(row: dict, prefix: str) -> float:
    return sum(v for k, v in row.items() if k.startswith(prefix) and k.endswith("_loss") and v is not None)


def plot_detection_curves(path: Path, history: list[dict], title: str | None = None) -> None:
    """Total train and val loss, and mAP50 / mAP50-95, per epoch."""
    plot_panels(path, [row["epoch"] for row in history], {
        "loss": {prefix.rstrip("_"): [_total(row, prefix) for row in history] for prefix in ("train_", "val_")},
        "mAP": {label: [row[key] for row in history] for key, label in (("map50", "mAP50"), ("map50_95", "mAP50-95"))},
    }, title)
