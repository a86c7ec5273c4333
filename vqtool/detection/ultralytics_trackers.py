"""``--log tensorboard|mlflow`` for detectors: Ultralytics' own integrations, on for one run.

TensorBoard's event files land in ``RUN/ultralytics/`` (Ultralytics writes them
into its save folder). MLflow gets a run named after the run folder in the
experiment ``--experiment`` (default the dataset's name) at
``MLFLOW_TRACKING_URI``; its id is kept in ``RUN/mlflow.json``. A resumed detector
run is a new MLflow run of the same name and experiment: Ultralytics logs its
arguments again when training starts, and MLflow refuses to change a run's params
(``resume`` among them), so continuing the old run would fail.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from vqtool.detection.ultralytics_env import integrations
from vqtool.reporter import Reporter
from vqtool.runs.atomic_files import read_json, write_json
from vqtool.runs.trackers import (MLFLOW, MLFLOW_FILE, MLFLOW_QUICK_FAILURE, TrackingOptions, check_trackers,
                                  quiet_mlflow, requested_trackers)


@contextlib.contextmanager
def ultralytics_tracking(model, run_dir: Path, tracking: TrackingOptions | None, *, experiment_default: str,
                         reporter: Reporter):
    """Ultralytics' integrations that ``tracking`` asks for (and those the run folder was logged to) for the
    trainings inside."""
    names = requested_trackers(tracking, run_dir)
    experiment = (tracking.experiment if tracking else None) or experiment_default
    if not names:
        yield
        return
    check_trackers(names)
    environment = {}
    if MLFLOW in names:
        environment = mlflow_environment(Path(run_dir), experiment)
        quiet_mlflow(reporter)
        model.add_callback("on_train_start", lambda trainer: remember_mlflow_run(Path(run_dir)))
    reporter.log(f"logging to {' and '.join(names)} through Ultralytics' integrations")
    with integrations(names, environment=environment):
        yield


def mlflow_environment(run_dir: Path, experiment: str) -> dict[str, str]:
    """The variables Ultralytics' MLflow callback reads: the experiment (a resumed run's own, at its tracking
    URI) and the run's name."""
    for variable, value in MLFLOW_QUICK_FAILURE.items():
        os.environ.setdefault(variable, value)
    environment = {"MLFLOW_EXPERIMENT_NAME": experiment, "MLFLOW_RUN": run_dir.name}
    saved = run_dir / MLFLOW_FILE
    if saved.is_file():
        record = read_json(saved)
        environment.update(MLFLOW_EXPERIMENT_NAME=record.get("experiment") or experiment,
                           MLFLOW_TRACKING_URI=record["tracking_uri"])
    return environment


def remember_mlflow_run(run_dir: Path) -> None:
    """Keep the id of the MLflow run Ultralytics opened (none when it could not reach the server)."""
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        write_json(run_dir / MLFLOW_FILE, {"run_id": active.info.run_id, "experiment_id": active.info.experiment_id,
                                           "experiment": os.environ.get("MLFLOW_EXPERIMENT_NAME"),
                                           "tracking_uri": mlflow.get_tracking_uri()})
