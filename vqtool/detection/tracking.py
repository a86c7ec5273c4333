"""``--log tensorboard|mlflow`` for detectors: Ultralytics' own integrations, on for one run.

TensorBoard's event files land in ``RUN/ultralytics/`` (Ultralytics writes them
into its save folder). MLflow gets a run named after the run folder in the
experiment ``--experiment`` (default the dataset's name) at
``MLFLOW_TRACKING_URI``; its id is kept in ``RUN/mlflow.json`` so that
``--resume`` continues the same MLflow run.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from vqtool.detection.ultralytics_env import integrations
from vqtool.reporter import Reporter
from vqtool.runs.folder import read_json, write_json
from vqtool.runs.tracking import (MLFLOW, MLFLOW_FILE, MLFLOW_QUICK_FAILURE, TrackingOptions, check_trackers,
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
    """The variables Ultralytics' MLflow callback reads: experiment and run name, or the run to continue."""
    for variable, value in MLFLOW_QUICK_FAILURE.items():
        os.environ.setdefault(variable, value)
    saved = run_dir / MLFLOW_FILE
    if saved.is_file():
        record = read_json(saved)
        return {"MLFLOW_RUN_ID": record["run_id"], "MLFLOW_TRACKING_URI": record["tracking_uri"]}
    return {"MLFLOW_EXPERIMENT_NAME": experiment, "MLFLOW_RUN": run_dir.name}


def remember_mlflow_run(run_dir: Path) -> None:
    """Keep the id of the MLflow run Ultralytics opened (none when it could not reach the server)."""
    import mlflow

    active = mlflow.active_run()
    if active is not None and not (run_dir / MLFLOW_FILE).is_file():
        write_json(run_dir / MLFLOW_FILE, {"run_id": active.info.run_id, "experiment_id": active.info.experiment_id,
                                           "tracking_uri": mlflow.get_tracking_uri()})
