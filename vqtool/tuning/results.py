"""What a study leaves: the best trial's options as a ``--config`` YAML, the top trials, and a figure of the
optimisation history beside the parameters' importance."""

from __future__ import annotations

import math
import os
from pathlib import Path

from vqtool.errors import VQError, first_line
from vqtool.plots import png_figure
from vqtool.runs.atomic_files import atomic_write

CONFIG_FILE = "best.yaml"
FIGURE_FILE = "tuning.png"
TOP = 10
PATH_OPTIONS = ("dataset", "weights", "data_dir", "class_weights")  # made absolute in the config: it may run anywhere


def trials_of(study, states=None) -> list:
    return study.get_trials(deepcopy=False, states=states)


def ranked(study) -> list:
    """The complete trials, best first."""
    from optuna.trial import TrialState

    return sorted(trials_of(study, (TrialState.COMPLETE,)), key=lambda t: (-t.value, t.number))


CHECKPOINT_FILES = ("model.safetensors", "state.pt")  # a run folder's large files: the weights and the resume state


def drop_checkpoints(study, study_dir: Path, keep: int) -> None:
    """Remove the weights and resume state of this folder's trials that are not among the study's ``keep`` best
    (a 10-minute study of a head on EfficientNet-Lite0 ran 339 trials: 4.5 GB of 14 MB checkpoints). Their
    args.json, metrics, model.json and curves stay, so `vqtool runs` still lists them and best.yaml reruns any."""
    from optuna.trial import TrialState

    kept = {trial.number for trial in ranked(study)[:keep]}
    folder = Path(study_dir).resolve()
    for trial in trials_of(study, (TrialState.COMPLETE, TrialState.PRUNED)):
        run_dir = Path(trial.user_attrs.get("run_dir", ""))
        if trial.number not in kept and run_dir.parent == folder:
            for name in CHECKPOINT_FILES:
                (run_dir / name).unlink(missing_ok=True)


def best_config(dataset: str, given: dict, params: dict) -> dict:
    """The options of a trial as a `--config` file holds them (keys are option names)."""
    config = {"dataset": dataset, **given, **params}
    for key in PATH_OPTIONS:
        value = config.get(key)
        if isinstance(value, str) and os.path.exists(value):
            config[key] = os.path.abspath(value)
    return {key: value for key, value in config.items() if value is not None}


def write_config(path: Path, config: dict, command: str, header: str) -> None:
    import yaml

    text = (f"# {header}\n# run it again with: vqtool {command} --config {path}\n"
            + yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    atomic_write(path, text)


def trial_row(trial) -> dict:
    """A trial as the --json document and the table show it."""
    attrs = trial.user_attrs
    return {"trial": trial.number, "state": trial.state.name.lower(), "value": trial.value,
            "epochs": attrs.get("epochs", len(trial.intermediate_values)), "seconds": attrs.get("seconds"),
            "params": dict(trial.params), "run_dir": attrs.get("run_dir"), "host": attrs.get("host")}


def importances(study) -> tuple[dict, str | None]:
    """(parameter -> importance (fANOVA, summing to 1), or {} and why not)."""
    import optuna

    complete = ranked(study)
    if len(complete) < 2:
        return {}, "needs two complete trials"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), None
    except (ValueError, RuntimeError) as error:  # e.g. every complete trial sampled the same values
        return {}, first_line(error)


def draw(path: Path, study, metric: str, importance: dict, why_not: str | None) -> None:
    """tuning.png: each trial's value (pruned ones at their last reported value) with the best so far; beside it,
    how much each parameter explains of the value (fANOVA)."""
    from optuna.trial import TrialState

    with png_figure(path, ncols=2, figsize=(11, 4)) as (figure, (history, bars)):
        complete = sorted(trials_of(study, (TrialState.COMPLETE,)), key=lambda t: t.number)
        pruned = [t for t in trials_of(study, (TrialState.PRUNED,)) if t.intermediate_values]
        history.scatter([t.number for t in complete], [t.value for t in complete], s=18, label="complete")
        history.scatter([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                        s=18, marker="x", color="grey", label="pruned (last epoch)")
        best, line = -math.inf, []
        for trial in complete:
            best = max(best, trial.value)
            line.append(best)
        history.step([t.number for t in complete], line, where="post", color="tab:red", label="best so far")
        history.set(title="optimisation history", xlabel="trial", ylabel=metric)
        history.legend(loc="lower right", fontsize=8)
        if importance:
            names = list(importance)[::-1]
            bars.barh(names, [importance[name] for name in names])
            bars.set(title=f"parameter importance for {metric} (fANOVA)", xlabel="share of the variance explained")
        else:
            bars.set_axis_off()
            bars.text(0.5, 0.5, f"parameter importance: {why_not}", ha="center", va="center")
        figure.suptitle(f"study {study.study_name}")


def summarize(study, metric: str, study_dir: Path, command: str, dataset: str, given: dict) -> dict:
    """The study's results: counts, the best trial, its config file and the figure (both written), the top trials."""
    from optuna.trial import TrialState

    counts = {state.name.lower(): len(trials_of(study, (state,))) for state in
              (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    top = ranked(study)
    if not top:
        raise VQError(f"study {study.study_name}: no trial has completed yet ({counts['pruned']} pruned, "
                      f"{counts['fail']} failed); give it more --trials or --budget")
    best = top[0]
    config_path, figure_path = Path(study_dir) / CONFIG_FILE, Path(study_dir) / FIGURE_FILE
    config = best_config(dataset, given, best.params)
    write_config(config_path, config, command, f"vqtool tune: study {study.study_name}, best trial {best.number}: "
                                               f"{metric} {best.value:.4f} (run folder {best.user_attrs.get('run_dir')})")
    importance, why_not = importances(study)
    draw(figure_path, study, metric, importance, why_not)
    return {"study": study.study_name, "metric": metric, "trials": counts,
            "best": {**trial_row(best), "config": config}, "config_file": str(config_path),
            "figure": str(figure_path), "importance": {k: round(v, 4) for k, v in importance.items()},
            "top": [trial_row(trial) for trial in top[:TOP]]}
