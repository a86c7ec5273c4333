"""Experiment tracking: a training run's epochs, final figures and files sent to TensorBoard and MLflow.

The run folder stays the record (metrics.csv, written by the epoch commit);
the trackers are told what each commit wrote, after it is on disk, so what they
hold equals metrics.csv and never an epoch the folder does not have.

- **tensorboard**: event files in ``RUN/tb/``. Each metrics.csv column is a
  scalar (:func:`scalar_tag`: ``train_loss`` -> ``train/loss``, ``lr`` ->
  ``lr/lr``) at the epoch as step; at the end the figures as images and the
  hyperparameters (the run's args.json, flattened) with the final metrics
  (TensorBoard's HParams), so ``tensorboard --logdir runs/`` compares runs.
- **mlflow**: a run in the experiment ``--experiment`` (default the dataset's
  name) at ``MLFLOW_TRACKING_URI`` (default MLflow's local store in the working
  directory); params = args.json flattened, metrics = metrics.csv's columns with
  the epoch as step, tags, and the run folder's files as artifacts. The MLflow
  run's id is kept in ``RUN/mlflow.json``, so ``--resume`` continues that run.

Both need an optional extra; :func:`check_trackers` says which before any
data is loaded. A tracker that fails (a tracking server that does not answer)
is one warning, and the run goes on without it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from vqtool import __version__
from vqtool.errors import VQError, first_line
from vqtool.reporter import SILENT, Reporter
from vqtool.runs.atomic_files import read_json, write_json

TENSORBOARD, MLFLOW = "tensorboard", "mlflow"
TRACKERS = (TENSORBOARD, MLFLOW)
# tracker -> the package it needs (the extra of the same name installs it)
REQUIRED_MODULE = {TENSORBOARD: "tensorboard", MLFLOW: "mlflow"}
TB_DIR = "tb"
TB_EVENTS = "events.out.tfevents."  # how TensorBoard's event files are named
MLFLOW_FILE = "mlflow.json"
# A tracking server that does not answer fails fast instead of retrying for minutes (MLflow's defaults: 7
# retries with backoff, 120 s per request); the user's own settings of these variables win.
MLFLOW_QUICK_FAILURE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
SECTIONS = ("train", "val", "test")  # metric columns named <section>_<metric>


@dataclass(frozen=True)
class TrackingOptions:
    """What ``--log`` and ``--experiment`` asked for."""

    names: tuple[str, ...] = ()
    experiment: str | None = None  # None: the dataset's name

    def check(self) -> None:
        check_trackers(self.names)


def check_trackers(names) -> None:
    """A usage error naming the extra to install when a requested tracker's library is missing (found without
    importing it, so the check costs nothing and comes before torch)."""
    for name in names:
        if name not in TRACKERS:
            raise VQError(f"--log {name}: choose from {', '.join(TRACKERS)}", usage=True)
        try:
            found = importlib.util.find_spec(REQUIRED_MODULE[name]) is not None
        except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (import refused)
            found = False
        if not found:
            raise VQError(f"--log {name} needs {name}, which is not installed: pip install '{_extra(name)}' "
                          f"(or, in a clone of vqtool, pip install -e '.[{name}]')", usage=True)


def _extra(name: str) -> str:
    """The requirement vqtool's extra ``name`` installs (``tensorboard>=2.14``), as its metadata declares it:
    vqtool is installed from a clone, not an index, so ``pip install 'vqtool[name]'`` finds nothing."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires("vqtool") or []
    except PackageNotFoundError:
        declared = []
    for requirement in declared:
        spec, _, marker = requirement.partition(";")
        if f'extra == "{name}"' in marker and spec.strip().startswith(name):
            return spec.strip()
    return name


def recorded_trackers(run_dir: Path) -> tuple[str, ...]:
    """The trackers a run folder was logged to (a resumed run continues them)."""
    run_dir = Path(run_dir)
    logged = {TENSORBOARD: any(run_dir.glob(f"*/{TB_EVENTS}*")),  # tb/, or a detector's ultralytics/
              MLFLOW: (run_dir / MLFLOW_FILE).is_file()}
    return tuple(name for name in TRACKERS if logged[name])


def requested_trackers(options: TrackingOptions | None, run_dir: Path) -> tuple[str, ...]:
    """What ``--log`` asks for, and the trackers the run folder was already logged to (a resume continues them)."""
    return tuple(dict.fromkeys((*(options.names if options else ()), *recorded_trackers(run_dir))))


def check_resumed(options: TrackingOptions | None, run_dir: Path) -> None:
    """:func:`check_trackers` for a run about to be resumed (before its data is loaded)."""
    check_trackers(requested_trackers(options, run_dir))


def flatten(document: dict, prefix: str = "") -> dict:
    """``{"config": {"lr": 0.1}}`` -> ``{"config.lr": 0.1}`` (lists kept as values)."""
    flat = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run_params(run_dir: Path) -> dict:
    """The run's resolved arguments (args.json's ``args``), flattened."""
    return flatten(read_json(Path(run_dir) / "args.json")["args"])


def scalar_tag(column: str) -> str:
    """The TensorBoard tag of a metrics.csv column: ``val_top1`` -> ``val/top1``, ``seconds`` -> ``epoch/seconds``."""
    section, _, metric = column.partition("_")
    if section in SECTIONS and metric:
        return f"{section}/{metric}"
    return f"lr/{column}" if section == "lr" else f"epoch/{column}"


def numbers(values: dict) -> dict[str, float]:
    """The entries of ``values`` that trackers can take: numbers, not NaN (empty cells and text left out)."""
    return {key: float(value) for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value}


def epoch_values(record: dict) -> dict[str, float]:
    """The numbers of one metrics.csv row that trackers log (the epoch is their step)."""
    return {key: value for key, value in numbers(record).items() if key != "epoch"}


@dataclass(frozen=True)
class RunIdentity:
    """What names a run in a tracker: its folder, command, model and dataset."""

    run_dir: Path
    command: str
    model: str
    dataset: str

    @property
    def tags(self) -> dict[str, str]:
        return {"vqtool_version": __version__, "command": self.command, "model": self.model,
                "dataset": self.dataset, "run_dir": str(Path(self.run_dir).resolve())}


class Trackers:
    """The trackers of one run. Every call is safe: a tracker that fails is reported once and dropped."""

    def __init__(self, trackers: list | None = None, reporter: Reporter = SILENT, logged_epoch: int = 0):
        self.trackers = trackers or []
        self.reporter = reporter
        self.logged_epoch = logged_epoch  # epochs up to this one are in the trackers already

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(tracker.name for tracker in self.trackers)

    def log_epochs(self, history: list[dict]) -> None:
        """Send the epochs of ``history`` (metrics.csv's rows) not sent yet."""
        new = [record for record in history if record["epoch"] > self.logged_epoch]
        if new:
            self._each(lambda tracker: tracker.log_epochs(new))
            self.logged_epoch = new[-1]["epoch"]

    def finish(self, metrics: dict, images: dict[str, Path], artifacts: list[Path]) -> None:
        """The end of a run: final ``metrics``, ``images`` (name -> PNG) and the run's files as ``artifacts``."""
        final, present = numbers(metrics), [path for path in artifacts if path.is_file()]
        self._each(lambda tracker: tracker.finish(final, images, present))

    def _each(self, call) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as error:  # a tracker's failure never fails the run: metrics.csv is the record
                self.drop(tracker, error)

    def drop(self, tracker, error: Exception) -> None:
        self.trackers.remove(tracker)
        self.reporter.warn(f"{tracker.name}: {first_line(error)}; not logging to it for the rest of this run "
                           f"(metrics.csv keeps the record)")


def open_trackers(options: TrackingOptions | None, identity: RunIdentity, *, experiment_default: str,
                  logged_epoch: int, reporter: Reporter) -> Trackers:
    """The trackers ``options`` asks for plus those the run folder was already logged to (rank 0 only)."""
    from vqtool.compute import distributed

    names = requested_trackers(options, identity.run_dir)
    if not names or not distributed.is_main():
        return Trackers([], reporter, logged_epoch)
    check_trackers(names)
    experiment = (options.experiment if options else None) or experiment_default
    openers = {TENSORBOARD: lambda: TensorBoardTracker(identity),
               MLFLOW: lambda: MlflowTracker(identity, experiment, reporter)}
    trackers = Trackers([], reporter, logged_epoch)
    for name in names:
        try:
            trackers.trackers.append(openers[name]())
        except Exception as error:  # a server that does not answer, a folder that cannot be written
            reporter.warn(f"{name}: {first_line(error)}; training goes on without it (metrics.csv keeps the record)")
    if trackers.trackers:
        reporter.log(f"logging to {', '.join(tracker.where for tracker in trackers.trackers)}")
    return trackers


class TensorBoardTracker:
    """Event files in RUN/tb/ (a resumed run adds a file there)."""

    name = TENSORBOARD

    def __init__(self, identity: RunIdentity):
        from torch.utils.tensorboard import SummaryWriter

        self.identity = identity
        self.folder = Path(identity.run_dir) / TB_DIR
        self.writer = SummaryWriter(str(self.folder))
        self.where = f"TensorBoard ({self.folder})"

    def log_epochs(self, records: list[dict]) -> None:
        for record in records:
            for column, value in epoch_values(record).items():
                self.writer.add_scalar(scalar_tag(column), value, record["epoch"])
        self.writer.flush()  # a killed run keeps the epochs its folder has

    def finish(self, metrics: dict, images: dict[str, Path], artifacts: list[Path]) -> None:
        for name, path in images.items():
            self.writer.add_image(name, png_pixels(path), dataformats="HWC")
        hparams = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
                   for key, value in run_params(self.identity.run_dir).items()}
        # run_name ".": the hyperparameters go with this folder's scalars, one TensorBoard run per run folder
        self.writer.add_hparams(hparams, {f"final/{key}": value for key, value in metrics.items()}, run_name=".")
        self.writer.close()


def png_pixels(path: Path):
    """A PNG file as an H x W x 3 uint8 array."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class MlflowTracker:
    """One MLflow run per run folder, its id in RUN/mlflow.json."""

    name = MLFLOW

    def __init__(self, identity: RunIdentity, experiment: str, reporter: Reporter):
        for variable, value in MLFLOW_QUICK_FAILURE.items():
            os.environ.setdefault(variable, value)
        quiet_mlflow(reporter)
        from mlflow import MlflowClient

        self.record_file = Path(identity.run_dir) / MLFLOW_FILE
        saved = read_json(self.record_file) if self.record_file.is_file() else None
        self.client = MlflowClient(tracking_uri=saved["tracking_uri"] if saved else None)
        if saved:  # a resumed run continues its MLflow run
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self._create_run(identity, experiment)
        self.where = f"MLflow (run {self.run_id} at {self.client.tracking_uri})"

    def _create_run(self, identity: RunIdentity, experiment: str) -> str:
        from mlflow.entities import Param

        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        run = self.client.create_run(experiment_id, run_name=Path(identity.run_dir).name, tags=identity.tags)
        params = [Param(key, str(value)) for key, value in run_params(identity.run_dir).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(run.info.run_id, params=params[start:start + 100])
        write_json(self.record_file, {"run_id": run.info.run_id, "experiment_id": experiment_id,
                                      "experiment": experiment, "tracking_uri": self.client.tracking_uri})
        return run.info.run_id

    def log_epochs(self, records: list[dict]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, record["epoch"]) for record in records
                   for key, value in epoch_values(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, metrics: dict, images: dict[str, Path], artifacts: list[Path]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"final/{key}", value, now, 0)
                                                    for key, value in metrics.items()])
        for path in artifacts:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")


def quiet_mlflow(reporter: Reporter) -> None:
    """MLflow's and its database migrations' info lines only with --debug (their warnings always)."""
    level = logging.INFO if getattr(reporter, "debug", False) else logging.WARNING
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(level)
