"""One thin module per subcommand: parse options, call the library, print."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import wraps

import click

from vqtool.commands.types import FiniteFloat, OutputPath
from vqtool.pickles import TRUST_ENV


class StdoutClosed(Exception):
    """The reader of stdout went away (``| head -1``); the CLI ends quietly with exit code 0."""


def _environment_flag(variable: str):
    """A flag's callback setting ``variable=1`` for the command (the library reads the environment, never
    Click), restored when the command ends."""

    def set_variable(ctx, param, value):
        previous = os.environ.get(variable)
        if value and previous != "1":
            os.environ[variable] = "1"
            ctx.find_root().call_on_close(lambda: _restore(variable, previous))
        return value

    return set_variable


def _restore(variable: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(variable, None)
    else:
        os.environ[variable] = value


debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_environment_flag("VQTOOL_DEBUG"),
    help="Show full tracebacks for errors.",
)
trust_pickle_option = click.option(
    "--trust-pickle", is_flag=True, expose_value=False, callback=_environment_flag(TRUST_ENV),
    help="Open pickle-based files (YOLO .pt checkpoints, label caches, CIFAR-10 batches, cached torchvision "
         "weights) without checking them first; only for files you trust: unpickling runs any code a file "
         "names.  [env: VQTOOL_TRUST_PICKLE=1]",
)


def output_options(command):
    """``--json``, ``--quiet`` and ``--debug`` for a subcommand; passes ``out: Output`` (a reporter)."""

    @click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress or logs on stderr.")
    @debug_option
    @wraps(command)
    def wrapper(*args, as_json, quiet, **kwargs):
        from vqtool.commands.output import Output

        return command(*args, out=Output(json=as_json, quiet=quiet), **kwargs)

    return wrapper


def overwrite_option(command):
    """--overwrite: the one switch that lets a command replace an existing output file (the rule itself is
    ``runs.folder.check_output``: a run folder's own files are never replaced)."""
    return click.option("--overwrite", is_flag=True,
                        help="Replace existing output files (a run folder's own files are never replaced).")(command)


def data_options(command):
    """Options every dataset source understands (DataOptions' fields, with ``--seed``); passes ``data:
    DataOptions``."""
    from vqtool.data import DataOptions
    from vqtool.option_fields import option_fields

    names = [item.parameter for item in option_fields(DataOptions)]

    @config_options(DataOptions)
    @wraps(command)
    def wrapper(*args, **kwargs):
        data = DataOptions(**{name: kwargs.pop(name) for name in names})
        return command(*args, data=data, **kwargs)

    return wrapper


def amp_option(command):
    """--amp for inference (eval, confusion, predict): PredictOptions.amp's (checkpoints stay fp32 on CPUs unless
    asked for bf16)."""
    from vqtool.classification.config import PredictOptions

    return config_options(PredictOptions, "amp")(command)


def threads_option(command):
    """--threads N: CPU threads for torch and for every export runtime (ONNX Runtime, OpenVINO)."""

    def apply(ctx, param, value):
        if value is not None:
            from vqtool.compute.device import use_threads

            use_threads(value)
        return value

    return click.option("--threads", type=click.IntRange(1), default=None, callback=apply, expose_value=False,
                        help="CPU threads for the model, whatever runs it (torch, ONNX Runtime, OpenVINO); "
                             "default: torch's (the cores).")(command)


def device_option(command):
    """--device for running a model (eval, confusion, predict, detect, inspect): PredictOptions.device's; training's
    is TrainConfig.device."""
    from vqtool.classification.config import PredictOptions

    return config_options(PredictOptions, "device")(command)


TRACKER_NAMES = ("tensorboard", "mlflow")  # vqtool.runs.trackers.TRACKERS, without importing it for --help


def _tracker_names(ctx, param, values) -> tuple[str, ...]:
    """--log given several times, or comma-separated (as VQTOOL_LOG=tensorboard,mlflow is)."""
    names = [name.strip() for value in values or () for name in value.replace(",", " ").split()]
    for name in names:
        if name not in TRACKER_NAMES:
            raise click.BadParameter(f"{name!r}: choose from {', '.join(TRACKER_NAMES)}", ctx, param)
    return tuple(dict.fromkeys(names))


def tracking_options(command):
    """``--log tensorboard|mlflow`` (repeatable) and ``--experiment``; passes ``tracking: TrackingOptions``."""

    @click.option("--log", "log", multiple=True, metavar="tensorboard|mlflow", envvar="VQTOOL_LOG",
                  callback=_tracker_names,
                  help="Also log the run to TensorBoard (event files in RUN/tb/) or MLflow (at $MLFLOW_TRACKING_URI); "
                       "repeatable. Needs tensorboard or mlflow (in a clone: pip install -e '.[tensorboard]').  "
                       "[env: VQTOOL_LOG=tensorboard,mlflow]")
    @click.option("--experiment", metavar="NAME", help="MLflow experiment (default: the dataset's name).")
    @wraps(command)
    def wrapper(*args, log, experiment, **kwargs):
        from vqtool.runs.trackers import TrackingOptions

        tracking = TrackingOptions(names=log, experiment=experiment)
        tracking.check()  # a missing extra is a usage error before anything is loaded
        return command(*args, tracking=tracking, **kwargs)

    return wrapper


def print_summary(out, summary: dict, title: str) -> None:
    """A result document as JSON or as a two-column table."""
    if out.json:
        out.emit(summary)
        return
    from vqtool.commands.output import format_field

    rows = [[key, format_field(key, value)] for key, value in summary.items()
            if key != "hint" and not isinstance(value, (dict, list))]
    out.table(["", "value"], rows, title=title)
    if summary.get("hint"):
        out.warn(summary["hint"])


# Where a value that wins over a --recipe's comes from: the command line, the environment, a --config file.
EXPLICIT = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT,
            click.core.ParameterSource.DEFAULT_MAP, click.core.ParameterSource.PROMPT)


@dataclass(frozen=True)
class GivenOptions:
    """The current command's option values and where each came from; read from Click's context in one place
    (:func:`given_options`), for the --config/--recipe precedence and the task's choice."""

    params: dict  # every parameter -> its value
    typed: dict  # those typed on the command line -> their values (they choose the task; --resume keeps the rest)
    explicit: frozenset  # typed, from the environment or a --config file: they win over a --recipe's values
    defaulted: frozenset  # those left at their option's default (a task's own defaults may replace them)


def given_options() -> GivenOptions:
    ctx = click.get_current_context()
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    return GivenOptions(
        params=dict(ctx.params),
        typed={name: ctx.params[name] for name, source in sources.items()
               if source is click.core.ParameterSource.COMMANDLINE},
        explicit=frozenset(name for name, source in sources.items() if source in EXPLICIT),
        defaulted=frozenset(name for name, source in sources.items() if source is click.core.ParameterSource.DEFAULT))


class FieldOption(click.Option):
    """A Click option made from a config dataclass field (:mod:`vqtool.option_fields`); ``field`` is that field."""

    def __init__(self, *args, field, **kwargs):
        super().__init__(*args, **kwargs)
        self.field = field


def field_option(item, *, command: str | None = None):
    """The ``click.option`` decorator of an option field (an :class:`~vqtool.option_fields.OptionField`): its type,
    default, help and the rest come from the field. ``command`` picks a help given per command."""
    declarations, settings = _option_settings(item, command)
    return click.option(*declarations, cls=FieldOption, **settings)


def field_parameter(item, *, command: str | None = None) -> FieldOption:
    """The option of an option field as an object (for a command built from a list of parameters)."""
    declarations, settings = _option_settings(item, command)
    return FieldOption(list(declarations), **settings)


def _option_settings(item, command: str | None) -> tuple[tuple, dict]:
    spec = item.spec
    help = spec["help"][command] if isinstance(spec["help"], dict) else spec["help"]
    settings = {"field": item, "default": item.default, "help": help, "metavar": spec["metavar"],
                "show_default": spec["show_default"] or None, "envvar": spec["envvar"]}
    declaration = item.flag
    if item.kind is bool and item.default:  # a flag that is on by default is turned off
        declaration = f"{item.flag}/{spec['off_flag'] or '--no-' + item.flag[2:]}"
    elif item.kind is bool:
        settings["is_flag"] = True
    else:
        settings["type"] = _field_type(item)
    if spec["complete"]:
        from vqtool.commands.completion import FIELD_COMPLETERS

        settings["shell_complete"] = FIELD_COMPLETERS[spec["complete"]]
    return (*spec["aliases"], declaration, item.parameter), settings


def _field_type(item):
    spec = item.spec
    if spec["choices"]:
        return click.Choice(spec["choices"])
    if spec["folder"]:
        return click.Path(file_okay=False)
    if spec["output"]:
        return OutputPath(folder={"file": False, "folder": True, "either": None}[spec["output"]])
    bounds = {"min": spec["min"], "max": spec["max"], "min_open": spec["min_open"], "max_open": spec["max_open"]}
    if item.kind is float:
        return FiniteFloat(**bounds)
    if item.kind is int:
        return click.INT if spec["min"] is None and spec["max"] is None else click.IntRange(**bounds)
    return None  # a string


def config_options(config, *names: str, command: str | None = None):
    """The options of a config dataclass's option fields (all, in field order, or ``names`` in that order);
    ``config`` an instance: its values are the defaults (finetune's TrainConfig)."""
    from vqtool.option_fields import option_fields

    def decorate(decorated):
        for item in reversed(option_fields(config, names or None)):
            decorated = field_option(item, command=command)(decorated)
        return decorated

    return decorate


def task_options(command):
    """The train/finetune options each registered task declares (:attr:`vqtool.registry.Task.config`)."""
    from vqtool.registry import registered_tasks

    for task in reversed(list(registered_tasks().values())):
        if task.config is not None:
            command = config_options(task.config)(command)
    return command


def task_request(command: str, out, *, target=None, dataset=None, data=None, tracking=None, given=None, params=None):
    """The :class:`~vqtool.registry.Request` of the current command: every option it was given (``params``,
    default: ``given``'s, the context's), those typed on the command line, and ``out`` as the reporter."""
    from vqtool.registry import Request

    given = given or given_options()
    return Request(command=command, target=target, dataset=dataset,
                   params=dict(given.params) if params is None else params, typed=given.typed,
                   defaulted=given.defaulted, data=data, tracking=tracking, reporter=out)


def show_report(out, task, report: dict) -> None:
    """An eval or confusion report: JSON, or the task's view of it (a table and lines)."""
    if out.json:
        out.emit(report)
        return
    view = task.view(report)
    if view.get("table"):
        table = view["table"]
        out.table(table["headers"], table["rows"], title=table.get("title"))
    for line in view.get("lines", ()):
        out.text(line)
