"""What a study varies: the default search space of each command, and the YAML ``--space`` file that changes it.

A space maps option names (as ``--config`` files name them: ``lr``, ``batch_size``, ``freeze``) to

    {low: 1.0e-4, high: 0.1, log: true}      a float range (an int range when low and high are ints; step: N)
    [linear, mlp]                            a choice
    0.1                                      a fixed value (the option is no longer searched)

and a range or choice may hold ``when: {OPTION: VALUE or [VALUES]}``: sampled only in trials where OPTION (searched or
fixed) has one of those values (the backbone's LR only where the backbone trains). A ``--space`` file's entries
replace or add to the command's default space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from vqtool.classification.config import FinetuneOptions, TrainConfig
from vqtool.option_fields import field_parameters
from vqtool.errors import VQError
from vqtool.registry import registered_tasks

# Options a space may not vary: they change what trials are compared on, or only how fast a trial runs.
NOT_SEARCHED = ("seed", "device", "amp", "compile", "cache", "allow_partial_weights")

DEFAULT_SPACES = {
    # A head over stored features is seconds per trial; a recipe's augmentation is not in the default: with a frozen
    # backbone it multiplies the backbone's pass by the cached views (add `recipe: [null, basic]` to search it).
    "finetune": {
        "lr": {"low": 1e-4, "high": 0.1, "log": True},
        "weight_decay": {"low": 1e-6, "high": 0.1, "log": True},
        "label_smoothing": {"low": 0.0, "high": 0.2},
        "head": ["linear", "mlp"],
        "batch_size": [16, 32, 64, 128],
        "epochs": {"low": 3, "high": 20},
        "freeze": ["backbone", "1", "2"],
        "backbone_lr": {"low": 1e-5, "high": 1e-2, "log": True, "when": {"freeze": ["1", "2"]}},
    },
    "train": {
        "lr": {"low": 1e-4, "high": 3e-2, "log": True},
        "weight_decay": {"low": 1e-6, "high": 0.1, "log": True},
        "label_smoothing": {"low": 0.0, "high": 0.2},
        "batch_size": [32, 64, 128],
        "optimizer": ["adam", "adamw", "sgd"],
        "recipe": [None, "basic"],
    },
}


@dataclass(frozen=True)
class Parameter:
    """One searched option: a float or int range, or a choice; ``when`` the conditions it is sampled under."""

    name: str
    kind: str  # "float", "int" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    when: tuple = ()  # ((option, (values...)), ...)

    def applies(self, values: dict) -> bool:
        return all(values.get(option) in allowed for option, allowed in self.when)

    def suggest(self, trial):
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        suggest = trial.suggest_int if self.kind == "int" else trial.suggest_float
        return suggest(self.name, self.low, self.high, log=self.log, **({"step": self.step} if self.step else {}))

    def candidates(self) -> list:
        """The values that must each be valid for the option (a range's ends, a choice's values)."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name} " + "|".join("none" if c is None else str(c) for c in self.choices)
        scale = " log" if self.log else (f" step {self.step:g}" if self.step else "")
        condition = "".join(f" (when {option} {'|'.join(map(str, allowed))})" for option, allowed in self.when)
        return f"{self.name} {self.low:g}..{self.high:g}{scale}{condition}"

    def to_dict(self) -> dict:
        document = ({"choices": list(self.choices)} if self.kind == "choice" else
                    {"low": self.low, "high": self.high, "log": self.log, **({"step": self.step} if self.step else {})})
        return {**document, **({"when": {option: list(allowed) for option, allowed in self.when}} if self.when else {})}


@dataclass
class Space:
    """The searched parameters, in sampling order, and the values a space file fixed."""

    parameters: dict[str, Parameter] = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)

    def without(self, names) -> "Space":
        """This space with ``names`` (options the user gave) neither searched nor fixed here."""
        return Space({k: p for k, p in self.parameters.items() if k not in names},
                     {k: v for k, v in self.fixed.items() if k not in names})

    def reachable(self, values: dict) -> "Space":
        """This space less the parameters whose ``when`` can never hold: it names a fixed option's other value."""
        def possible(parameter):
            return all(option in self.parameters or {**values, **self.fixed}.get(option) in allowed
                       for option, allowed in parameter.when)

        return Space({k: p for k, p in self.parameters.items() if possible(p)}, dict(self.fixed))

    def sample(self, trial, values: dict) -> dict:
        """The trial's values of the parameters that apply, given ``values`` (the fixed options)."""
        sampled = {}
        for name, parameter in self.parameters.items():
            if parameter.applies({**values, **self.fixed, **sampled}):
                sampled[name] = parameter.suggest(trial)
        return sampled

    def to_dict(self) -> dict:
        return {"search": {k: p.to_dict() for k, p in self.parameters.items()}, "fixed": self.fixed}


def searchable(command: str, task: str = "classification") -> dict[str, str]:
    """Option name -> its type (``float``, ``int | None``...) for the options a space of ``command`` may hold: those
    the task takes (multi-label runs have no label smoothing)."""
    classes = (TrainConfig, FinetuneOptions) if command == "finetune" else (TrainConfig,)
    taken = registered_tasks()[task].takes(command)
    parameters = field_parameters(*classes)
    return {f.name: str(f.type) for cls in classes for f in fields(cls)
            if f.name not in NOT_SEARCHED and parameters[f.name] in taken}


def default_space(command: str, task: str = "classification") -> Space:
    types = searchable(command, task)
    return parse_space({name: spec for name, spec in DEFAULT_SPACES[command].items() if name in types}, command,
                       "the default space", task=task)


def parse_space(document, command: str, source: str, base: Space | None = None,
                task: str = "classification") -> Space:
    """The space ``document`` describes, over ``base`` (its entries replace or add to base's); ``source`` names
    it in error messages; ``task``: the task of the study's runs."""
    if not isinstance(document, dict):
        raise VQError(f"{source}: must be a mapping of option names to ranges, choices or values", usage=True)
    types = searchable(command, task)
    space = Space(dict(base.parameters), dict(base.fixed)) if base else Space()
    for key, spec in document.items():
        name = str(key).replace("-", "_")
        if name not in types:
            raise VQError(f"{source}: {key}: not an option vqtool tune {command} can search"
                          f"{'' if task == 'classification' else ' for ' + task + ' runs'} "
                          f"(these are: {', '.join(sorted(types))})", usage=True)
        space.parameters.pop(name, None)
        space.fixed.pop(name, None)
        if isinstance(spec, (dict, list)):
            space.parameters[name] = _parameter(name, spec, types, f"{source}: {key}")
        else:
            space.fixed[name] = _coerce(spec, types[name], f"{source}: {key}")
    return space


RANGE_KEYS = {"low", "high", "log", "step", "when", "choices"}


def _parameter(name: str, spec, types: dict, where: str) -> Parameter:
    kind = types[name]
    if isinstance(spec, list):
        spec = {"choices": spec}
    unknown = sorted(set(map(str, spec)) - RANGE_KEYS)
    if unknown:
        raise VQError(f"{where}: unknown key {', '.join(unknown)} (a range has low, high, log, step; a choice is "
                      f"a list; either may have when)", usage=True)
    when = _conditions(spec.get("when"), types, where)
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices or len(set(map(repr, choices))) != len(choices):
            raise VQError(f"{where}: a choice needs a list of distinct values", usage=True)
        return Parameter(name, "choice", choices=tuple(_coerce(c, kind, where) for c in choices), when=when)
    return _range(name, spec, kind, where, when)


def _range(name: str, spec: dict, kind: str, where: str, when: tuple) -> Parameter:
    if "low" not in spec or "high" not in spec:
        raise VQError(f"{where}: a range needs low and high (or give a list of choices, or one value)", usage=True)
    base = kind.split(" |")[0]
    if base not in ("float", "int"):
        raise VQError(f"{where}: a {base} option takes a list of choices, not a range", usage=True)
    low, high = (_coerce(spec[end], kind, f"{where}: {end}") for end in ("low", "high"))
    log, step = spec.get("log", False), spec.get("step")
    if low is None or high is None or not low < high:
        raise VQError(f"{where}: low must be below high (got {spec['low']} and {spec['high']})", usage=True)
    if not isinstance(log, bool):
        raise VQError(f"{where}: log must be true or false", usage=True)
    if log and (low <= 0 or step):
        raise VQError(f"{where}: a log range needs low > 0 and no step", usage=True)
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
        raise VQError(f"{where}: step must be a positive number", usage=True)
    return Parameter(name, base, low=low, high=high, log=log, step=step, when=when)


def _conditions(when, types: dict, where: str) -> tuple:
    if when is None:
        return ()
    if not isinstance(when, dict) or not when:
        raise VQError(f"{where}: when must map options to a value or a list of values", usage=True)
    conditions = []
    for option, allowed in when.items():
        name = str(option).replace("-", "_")
        if name not in types:
            raise VQError(f"{where}: when: {option}: not an option vqtool tune can search", usage=True)
        allowed = allowed if isinstance(allowed, list) else [allowed]
        conditions.append((name, tuple(_coerce(value, types[name], f"{where}: when: {option}") for value in allowed)))
    return tuple(conditions)


def _coerce(value, kind: str, where: str):
    """``value`` as the option's type (``freeze: 2`` is the string "2"); a value of the wrong type is an error."""
    optional = kind.endswith("| None")
    base = kind.split(" |")[0]
    if value is None:
        if optional:
            return None
        raise VQError(f"{where}: needs a value", usage=True)
    if base == "bool":
        if isinstance(value, bool):
            return value
    elif base == "str":
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    elif base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base == "float":
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    raise VQError(f"{where}: {value!r} is not a {'finite number' if base == 'float' else base}", usage=True)
