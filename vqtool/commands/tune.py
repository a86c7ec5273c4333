"""vqtool tune finetune|train: a hyper-parameter search whose trials are ordinary finetune or train runs.

A subcommand per command, rather than one ``--command`` option: ``vqtool tune finetune`` takes every option of
``vqtool finetune`` (built from that command's own parameters, so the two never drift apart), with its help, its
checks and its default search space; the options you give are fixed for every trial, the others are searched.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time

import click

from vqtool.commands import data_options, given_options, output_options
from vqtool.tuning import METRICS, TASK_METRICS, Settings

# The base command's options a study has no use for: each trial has its own run folder and no trackers.
NOT_TAKEN = ("out_dir", "resume", "lr_find", "log", "experiment")
# Options that change how fast a trial runs, not what it computes: not part of a study's identity.
NEUTRAL = ("workers", "device", "cache_store", "as_json", "quiet")


class Duration(click.ParamType):
    """90, 90s, 30m, 1.5h, 1h30m -> seconds."""

    name = "duration"
    UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd]?)", text)
        if not text or not parts or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", ""):
            self.fail(f"{value!r}: use seconds or a duration such as 90s, 30m, 2h or 1h30m", param, ctx)
        seconds = sum(float(number) * self.UNITS[unit or "s"] for number, unit in parts)
        if seconds <= 0:
            self.fail(f"{value!r}: must be more than nothing", param, ctx)
        return seconds


def tune_options() -> list[click.Option]:
    """The study's own options (new objects for each subcommand)."""
    from vqtool.commands import field_parameter
    from vqtool.option_fields import option_fields

    trials, storage, pruner, keep_checkpoints, verbose = (
        field_parameter(item) for item in option_fields(Settings, ["trials", "storage", "pruner", "keep_checkpoints",
                                                                   "verbose"]))
    return [
        trials,
        click.Option(["--budget"], type=Duration(), metavar="TIME",
                     help="Stop this process after TIME (90s, 30m, 2h); a trial running then stops at its next step."),
        click.Option(["--metric"], type=click.Choice(METRICS),
                     help="The val metric trials are compared and pruned on (at the epoch the checkpoint keeps); "
                          "default val_top1, or map (macro mAP) for multi-label data."),
        click.Option(["--space", "space_file"], type=click.Path(dir_okay=False), metavar="FILE",
                     help="YAML file of ranges, choices or fixed values that replace or add to the default space."),
        click.Option(["--study", "study_name"], metavar="NAME",
                     help="The study's name (default: COMMAND-DATASET); the same name continues it."),
        storage,
        click.Option(["--out", "study_dir"], type=click.Path(file_okay=False), metavar="DIR",
                     help="Study folder: the trials' run folders, best.yaml, tuning.png (default runs/tune-NAME); "
                          "an existing one continues its study."),
        pruner, keep_checkpoints, verbose,
    ]


TUNE_OPTION_NAMES = {option.name for option in tune_options()}

EXAMPLES = {
    "finetune": "\b\nExamples:\n"
                "  vqtool tune finetune ./pets --model resnet50 --freeze backbone --budget 10m\n"
                "  vqtool finetune --config runs/tune-finetune-pets/best.yaml\n"
                "  vqtool tune finetune ./pets --trials 50 --space space.yaml --storage postgresql://me@db/studies\n",
    "train": "\b\nExamples:\n"
             "  vqtool tune train ./cifar10 --model simplecnn --epochs 10 --trials 30\n"
             "  vqtool train --config runs/tune-train-cifar10/best.yaml\n",
}


def _run(command: str, dataset: str, data, out, **params) -> None:
    """The callback of `vqtool tune COMMAND`: options -> Job, Space, Settings -> the study -> its results."""
    from vqtool.tuning.storage import require_optuna

    require_optuna()  # a missing extra is one line before anything heavy is imported
    job, given = _job(command, dataset, data, given_options())
    settings = _settings(command, dataset, params)
    from vqtool.tuning.space import default_space
    from vqtool.tuning.study import tune_job
    from vqtool.tuning.trial import check_space

    space = default_space(command, job.task)
    if params["space_file"]:
        space = _space_file(params["space_file"], command, space, job.task)
    space = space.without(job.explicit)
    check_space(job, space, f"--space {params['space_file']}" if params["space_file"] else "the default space")
    with stop_after_trial(out) as stop:
        results = tune_job(job, space, settings, reporter=out, given=given, stop=stop)
        _print(out, results)
        if stop.signum is not None:
            stop.raise_again(f"study {settings.name} stopped after its current trial and holds "
                             f"{sum(results['trials'].values())} trials; run the same command to continue it")


def _job(command: str, dataset: str, data, options):
    """The Job every trial shares, and the options the user gave (option name -> value); ``options``: the
    command's :class:`~vqtool.commands.GivenOptions`."""
    from vqtool.classification.config import TrainConfig
    from vqtool.option_fields import field_parameters, parameter_names
    from vqtool.tuning.space import searchable
    from vqtool.tuning.trial import Job, trial_request

    field_of = {parameter: name for name, parameter in field_parameters(TrainConfig).items()}  # model_name -> model
    params = {field_of.get(name, name): value for name, value in options.params.items()}
    explicit = {field_of.get(name, name) for name in options.explicit if name not in TUNE_OPTION_NAMES}
    task = _task(command, dataset, {name: options.params[name] for name in options.explicit})
    fields = [*searchable(command, task.name), *parameter_names(*filter(None, [task.config]))]  # multilabel's --loss...
    values = {name: params[name] for name in (*fields, "seed", "device", "amp", "compile", "cache",
                                              "allow_partial_weights") if name in params}
    given = {name: params[name] for name in sorted(explicit) if name not in NEUTRAL and name != "dataset"}
    if not task.default:  # best.yaml names the task: `vqtool finetune --config best.yaml` runs the same task
        given["task"] = task.name
    job = Job(command, dataset, data, values, explicit & set(values), _metric(params["metric"], task.name), task.name)
    task.check_training(trial_request(job, {}))  # the given options alone pass the command's and the task's checks
    return job, given


def _task(command: str, dataset: str, given: dict):
    """The task of the data and the options given (--task, --labels-from ...), if vqtool tune can search it."""
    from vqtool.errors import VQError
    from vqtool.tasks import check_options, task_for

    task = task_for(dataset, typed=given)
    if task.name not in TASK_METRICS:
        raise VQError(f"vqtool tune searches classifiers' options (single- or multi-label), and {dataset} is "
                      f"{task.name} data" + (" (a YOLO detector tunes with Ultralytics' model.tune())"
                                             if task.name == "detection" else ""), usage=True)
    check_options(task, command, given)
    return task


def _metric(metric: str | None, task: str) -> str:
    """--metric, or the task's default; one that does not measure this task's runs is a usage error."""
    from vqtool.errors import VQError

    metrics = TASK_METRICS[task]
    if metric is not None and metric not in metrics:
        owner = next(name for name, measured in TASK_METRICS.items() if metric in measured)
        raise VQError(f"--metric {metric} does not measure {task} runs; choose {' or '.join(metrics)} (or give "
                      f"--task {owner} for {owner} data)", usage=True)
    return metric or metrics[0]


def _settings(command: str, dataset: str, params: dict):
    from pathlib import Path

    from vqtool.errors import VQError

    if not params["trials"] and not params["budget"]:
        raise VQError("give --trials N or --budget TIME (or both): how long the search runs", usage=True)
    name = params["study_name"] or f"{command}-{Path(dataset.rstrip('/')).stem or dataset}"
    if not re.fullmatch(r"[\w.+-]+", name):
        raise VQError(f"--study {name!r}: use letters, digits and . _ + - only (it names a folder)", usage=True)
    return Settings(name=name, study_dir=Path(params["study_dir"] or f"runs/tune-{name}"), storage=params["storage"],
                    trials=params["trials"], budget=params["budget"], pruner=params["pruner"],
                    verbose=params["verbose"], keep_checkpoints=params["keep_checkpoints"])


def _space_file(path: str, command: str, default, task: str):
    from vqtool.errors import VQError
    from vqtool.files import read_text
    from vqtool.tuning.space import parse_space

    import yaml

    try:
        document = yaml.safe_load(read_text(path))
    except OSError as error:
        raise VQError(f"--space {path}: {error.strerror or error}", usage=True) from error
    except UnicodeDecodeError as error:
        raise VQError(f"--space {path}: not a text file (YAML)", usage=True) from error
    except yaml.YAMLError as error:
        raise VQError(f"--space {path}: not valid YAML ({str(error).splitlines()[0]})", usage=True) from error
    return parse_space(document, command, f"--space {path}", base=default, task=task)


class StopRequest(threading.Event):
    """Set by the first Ctrl-C or SIGTERM: the study stops after its current trial. ``signum``: which signal."""

    signum: int | None = None

    def raise_again(self, note: str) -> None:
        """End the command as that signal would have (Aborted / Terminated, exit 130 / 143), with ``note``."""
        from vqtool.errors import note_interrupt

        try:
            os.kill(os.getpid(), self.signum)
            time.sleep(5)  # the handler (restored by stop_after_trial) raises during the sleep
        except KeyboardInterrupt as interrupt:  # Terminated (SIGTERM) is a KeyboardInterrupt too
            note_interrupt(interrupt, note)
            raise


@contextlib.contextmanager
def stop_after_trial(out):
    """The first Ctrl-C or SIGTERM sets the StopRequest; a second one interrupts the trial (as it always would)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in signals}

    def handle(signum, frame):
        for number in signals:  # from now on, a signal does what it did before the study
            signal.signal(number, previous[number])
        stop.signum = signum
        stop.set()
        out.warn(f"{signal.Signals(signum).name}: stopping after the current trial (the study stays intact); "
                 f"send it again to stop now")

    for signum in signals:
        signal.signal(signum, handle)
    try:
        yield stop
    finally:
        for signum in signals:
            signal.signal(signum, previous[signum])


def _print(out, results: dict) -> None:
    if out.json:
        out.emit(results)
        return
    metric = results["metric"]
    rows = [[row["trial"], f"{row['value']:.4f}", row["epochs"], f"{row['seconds']:.1f}",
             os.path.basename(row["run_dir"] or ""),
             ", ".join(f"{name} {_cell(value)}" for name, value in row["params"].items())] for row in results["top"]]
    out.table(["trial", metric, "epochs", "seconds", "run folder", "options"], rows,
              title=f"top trials of study {results['study']}")
    best, counts = results["best"], results["trials"]
    out.table(["", "value"], [
        ["study", f"{results['study']} ({results['storage']})"],
        ["trials", ", ".join(f"{count} {state}" for state, count in counts.items() if count)],
        ["this run", f"{results['ran']} trials in {results['seconds']:.0f} s, stopped by {results['stopped']}"],
        ["best trial", f"{best['trial']}: {metric} {best['value']:.4f}"],
        ["best run folder", best["run_dir"] + (f" (on {best['host']})" if best.get("host") != socket.gethostname()
                                               else "")],
        ["best config", results["config_file"]],
        ["figure", results["figure"]],
    ], title="tuning summary")


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3g}"
    return "none" if value is None else value


def _tune_command(base: click.Command, command: str) -> click.Command:
    """`vqtool tune COMMAND`: COMMAND's parameters (less NOT_TAKEN) and the study's options."""
    params = [param for param in base.params if param.name not in NOT_TAKEN] + tune_options()

    def callback(**kwargs):
        return _run(command, **kwargs)

    doc = (f"Search the options of `vqtool {command}` on DATASET: each trial an ordinary {command} run under the "
           f"study folder.\n\nOptions you give are fixed for every trial; the default space (or --space FILE) "
           f"searches the others. At the end: the best trial's options as best.yaml (vqtool {command} --config "
           f"best.yaml runs it again), the top trials, and tuning.png.\n\n" + EXAMPLES[command])
    return click.Command(command, params=params, callback=output_options(data_options(callback)), help=doc,
                         short_help=f"Search the options of vqtool {command}.")


@click.group()
def tune():
    """Hyper-parameter search for `finetune` and `train` on Optuna (a subcommand of each).

    \b
    Examples:
      vqtool tune finetune ./pets --model resnet50 --freeze backbone --budget 10m
      vqtool tune train fashion-mnist --model smallcnn --trials 20
    """


def _add_commands() -> None:
    from vqtool.commands.finetune import finetune
    from vqtool.commands.train import train

    for base in (finetune, train):
        tune.add_command(_tune_command(base, base.name))


_add_commands()
