"""The search: an Optuna study (TPE sampler, a pruner fed by each epoch's val metric) asked for trials one after
another until the study holds --trials trials, the --budget is spent, or a signal asks to stop after the trial.

Several processes (on one machine or several) may work on one study: each asks the storage for its next trial,
whose number the storage assigns, and writes the trial's run folder under its own study folder. A process killed
mid-trial leaves that trial RUNNING; the next process on the same host marks it failed (its pid is gone).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from pathlib import Path

from vqtool.errors import VQError, first_line, note_interrupt
from vqtool.reporter import Reporter
from vqtool.tuning import Settings
from vqtool.runs.summaries import is_run
from vqtool.runs.status import alive
from vqtool.tuning.results import drop_checkpoints, summarize
from vqtool.tuning.space import Space
from vqtool.tuning.storage import default_storage, open_storage, require_optuna, shown
from vqtool.tuning.trial import Job, Pruned, TrialReporter, run_trial

PRUNERS = ("median", "hyperband", "none")
FAILURES_IN_A_ROW = 5  # then the study stops: something is wrong with every trial, not with one


def tune_job(job: Job, space: Space, settings: Settings, *, reporter: Reporter, given: dict,
             stop: threading.Event | None = None, pruner=None) -> dict:
    """Run the study's trials; the results document (:func:`~vqtool.tuning.results.summarize`) with ``stopped``
    (why this process stopped) and ``ran`` (trials it ran). ``given``: the options the user set (option name ->
    value), which every trial shares and the best config repeats. ``pruner`` overrides ``settings.pruner``."""
    require_optuna()
    started = time.monotonic()
    deadline = started + settings.budget if settings.budget else None
    job.values.update(space.fixed)
    job.explicit |= set(space.fixed)
    space = space.reachable(job.values)
    given = {**given, **space.fixed}
    study = open_study(job, space, settings, given, pruner)
    reporter.log(describe_start(study, space, given, settings))
    ran, failures, last_error = 0, 0, None
    trial_reporter = TrialReporter(reporter, settings.verbose)
    while not (why := reason_to_stop(study, settings, deadline, stop)):
        outcome = one_trial(study, job, space, settings, trial_reporter, deadline, reporter)
        drop_checkpoints(study, settings.study_dir, settings.keep_checkpoints)
        ran += 1
        failed = isinstance(outcome, VQError)
        if failed and last_error is not None and first_line(outcome) == first_line(last_error):
            raise VQError(f"two trials in a row failed the same way: {first_line(outcome)}")
        failures, last_error = (failures + 1, outcome) if failed else (0, None)
        if failures >= FAILURES_IN_A_ROW:
            raise VQError(f"{FAILURES_IN_A_ROW} trials in a row failed; the last: {first_line(outcome)}")
    results = summarize(study, job.metric, settings.study_dir, job.command, job.dataset, given)
    return {**results, "stopped": why, "ran": ran, "seconds": round(time.monotonic() - started, 1),
            "study_dir": str(settings.study_dir), "storage": shown(storage_url(settings))}


def storage_url(settings: Settings) -> str:
    return settings.storage or default_storage(settings.study_dir)


def open_study(job: Job, space: Space, settings: Settings, given: dict, pruner=None):
    """The study (created, or loaded to continue), checked to hold trials of the same search."""
    optuna = require_optuna()
    from optuna.trial import TrialState

    study_dir = Path(settings.study_dir)
    if is_run(study_dir):
        raise VQError(f"--out {study_dir}: a run folder, not a study folder", usage=True)
    storage = open_storage(settings.storage) if settings.storage else None  # a bad URL leaves no folder behind
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VQError(f"--out {study_dir}: cannot create it ({error.strerror or first_line(error)})") from error
    storage = storage or open_storage(storage_url(settings))
    with warnings.catch_warnings():  # constant_liar and multivariate are "experimental" to Optuna, and long-standing
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(multivariate=True, constant_liar=True)
    study = optuna.create_study(study_name=settings.name, storage=storage, direction="maximize", sampler=sampler,
                                pruner=pruner or make_pruner(settings.pruner), load_if_exists=True)
    identity = {"command": job.command, "dataset": job.dataset, "metric": job.metric, "given": given,
                "space": space.to_dict()}
    recorded = study.user_attrs.get("vqtool")
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if recorded is None or not finished:  # a study whose trials all failed (a mistyped option) starts afresh
        if any(path.name.startswith("trial-") for path in study_dir.iterdir()) and not study.trials:
            raise VQError(f"--out {study_dir} holds trial folders of another study; choose another --out", usage=True)
        study.set_user_attr("vqtool", identity)
    elif _jsonish(recorded) != _jsonish(identity):
        differing = [key for key in identity if _jsonish(recorded.get(key)) != _jsonish(identity[key])]
        raise VQError(f"study {settings.name} in {shown(storage_url(settings))} was started with other "
                      f"{', '.join(differing)}; run it with the same options, or name another --study", usage=True)
    fail_abandoned(study)
    return study


def _jsonish(value):
    """``value`` as the storage gives it back (JSON: tuples are lists)."""
    import json

    return json.loads(json.dumps(value))


def make_pruner(name: str):
    optuna = require_optuna()
    if name == "median":  # five trials first, and no verdict on a trial's first epoch
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise VQError(f"--pruner {name}: choose from {', '.join(PRUNERS)}", usage=True)


def fail_abandoned(study) -> None:
    """Trials left RUNNING by a process of this host that is gone (SIGKILL, a crash): failed, so they do not count."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("host") == host and not alive(trial.user_attrs.get("pid")):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def reason_to_stop(study, settings: Settings, deadline: float | None, stop: threading.Event | None) -> str | None:
    from optuna.trial import TrialState

    if stop is not None and stop.is_set():
        return "signal"
    if deadline is not None and time.monotonic() >= deadline:
        return "budget"
    # the trials other workers are running count too, or each worker would start one more at the end
    if settings.trials is not None and len(study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))) >= settings.trials:
        return "trials"
    return None


def one_trial(study, job: Job, space: Space, settings: Settings, trial_reporter: TrialReporter,
              deadline: float | None, reporter: Reporter):
    """Ask for a trial, run it, tell the study how it ended; the value, a Pruned, or the VQError it failed with."""
    from optuna.trial import TrialState

    trial = study.ask()
    run_dir = (Path(settings.study_dir) / f"trial-{trial.number:04d}").resolve()
    for key, value in (("host", socket.gethostname()), ("pid", os.getpid()), ("run_dir", str(run_dir))):
        trial.set_user_attr(key, value)
    started = time.monotonic()
    sampled = space.sample(trial, job.values)
    try:
        value, summary = run_trial(job, trial, sampled, run_dir, trial_reporter, deadline)
    except Pruned as pruned:
        trial.set_user_attr("seconds", round(time.monotonic() - started, 2))
        study.tell(trial, state=TrialState.PRUNED)
        reporter.log(f"trial {trial.number}: {_params(sampled)} -> {pruned}, {time.monotonic() - started:.1f} s")
        return pruned
    except VQError as error:  # this trial's options failed (a diverging LR, an invalid combination)
        study.tell(trial, state=TrialState.FAIL)
        reporter.warn(f"trial {trial.number} failed: {first_line(error)} ({_params(sampled)})")
        return error
    except BaseException as interrupt:  # Ctrl-C twice, SIGTERM twice, an unexpected error: the study stays intact
        study.tell(trial, state=TrialState.FAIL)
        if isinstance(interrupt, KeyboardInterrupt):
            note_interrupt(interrupt, f"trial {trial.number} of study {settings.name} stopped and marked failed; "
                                      f"run the same command to continue the study")
        raise
    seconds = round(time.monotonic() - started, 2)
    trial.set_user_attr("seconds", seconds)
    trial.set_user_attr("epochs", summary["epochs"])
    study.tell(trial, value)
    best = study.best_trial
    reporter.log(f"trial {trial.number}: {_params(sampled)} -> {job.metric} {value:.4f} "
                 f"(best {best.value:.4f}, trial {best.number}), {seconds:.1f} s")
    return value


def _params(sampled: dict) -> str:
    return ", ".join(f"{name} {_value(value)}" for name, value in sampled.items()) or "no searched options"


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "none" if value is None else str(value)


def describe_start(study, space: Space, given: dict, settings: Settings) -> str:
    done = len(study.trials)
    where = f"study {settings.name} ({shown(storage_url(settings))})"
    searching = "; ".join(parameter.describe() for parameter in space.parameters.values()) or "nothing"
    fixed = ", ".join(f"{name} {_value(value)}" for name, value in given.items()) or "nothing"
    until = " and ".join(filter(None, [f"{settings.trials} trials" if settings.trials else None,
                                       f"{settings.budget:.0f} s" if settings.budget else None]))
    return (f"{where}: {'continuing after ' + str(done) + ' trials' if done else 'new'}; runs until {until}; "
            f"searching {searching}; fixed: {fixed}")
