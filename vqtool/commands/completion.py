"""Shell completion for model and dataset names, without importing torch.

Names come from ``model_names.txt`` (written by ``make completions`` from
the full registry) plus the entry-point names that plugins declare, which by
convention are the names they register.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from importlib.resources import files

from click.shell_completion import BashComplete, CompletionItem, add_completion_class

NAMES_FILE = "model_names.txt"
BUILTIN_DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")


def _plugin_names(group: str) -> list[str]:
    return [entry_point.name for entry_point in entry_points(group=group)]


def known_model_names() -> list[str]:
    packaged = files("vqtool").joinpath(NAMES_FILE)
    names = packaged.read_text().split() if packaged.is_file() else []
    return names + _plugin_names("vqtool.models")


def complete_model(ctx, param, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(name) for name in known_model_names() if name.startswith(incomplete)]


def complete_device(ctx, param, incomplete: str) -> list[CompletionItem]:
    from vqtool.choices import DEVICES

    return [CompletionItem(device) for device in DEVICES if device.startswith(incomplete)]


EXPORT_FORMATS = ("onnx", "torchscript", "openvino")  # YOLO weights also take Ultralytics' other formats


def complete_export_format(ctx, param, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(name) for name in EXPORT_FORMATS if name.startswith(incomplete)]


def complete_dataset(ctx, param, incomplete: str) -> list[CompletionItem]:
    names = [*BUILTIN_DATASETS, *_plugin_names("vqtool.datasets")]
    matches = [CompletionItem(name) for name in names if name.startswith(incomplete)]
    return matches + [CompletionItem(incomplete, type="file")]


# The completers an option field names (vqtool.option_fields.option's ``complete``).
FIELD_COMPLETERS = {"model": complete_model, "device": complete_device, "format": complete_export_format}


# Click's bash script empties COMPREPLY when an entry is a file or folder and lets bash list paths instead, dropping
# the names before it (dataset names, then `file`): here paths are added to the names.
BASH_SCRIPT = """\
%(complete_func)s() {
    local IFS=$'\\n'
    local response

    response=$(env COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD=$COMP_CWORD %(complete_var)s=bash_complete $1)

    for completion in $response; do
        IFS=',' read type value <<< "$completion"

        if [[ $type == 'dir' ]]; then
            COMPREPLY+=($(compgen -d -- "$value"))
            compopt -o filenames 2>/dev/null
        elif [[ $type == 'file' ]]; then
            COMPREPLY+=($(compgen -f -- "$value"))
            compopt -o filenames 2>/dev/null
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=($value)
        fi
    done

    return 0
}

%(complete_func)s_setup() {
    complete -o nosort -F %(complete_func)s %(prog_name)s
}

%(complete_func)s_setup;
"""


class BashNamesAndPaths(BashComplete):
    """Bash completion that offers names and paths together."""

    source_template = BASH_SCRIPT


def register_shell_completion() -> None:
    add_completion_class(BashNamesAndPaths, name="bash")


def write_model_names(path) -> int:
    """Regenerate the packaged name list from the live registry (``make completions``)."""
    from vqtool.registry import model_names

    names = sorted(n for n in model_names() if not _from_plugin(n))
    with open(path, "w") as f:
        f.write("\n".join(names) + "\n")
    return len(names)


def write_catalog(path) -> None:
    """Regenerate the packaged catalog (vqtool.catalog) from the live registry, plugins left out."""
    import json

    from vqtool.commands.listing import live_dataset_rows, live_model_rows

    document = {"models": [row for row in live_model_rows() if not _from_plugin(row["name"])],
                "datasets": [row for row in live_dataset_rows() if row["source"] == "builtin"]}
    lines = [f'"{key}": [\n' + ",\n".join(json.dumps(row) for row in rows) + "\n]" for key, rows in document.items()]
    with open(path, "w") as f:  # one row a line: diffs show what changed
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def _from_plugin(name: str) -> bool:
    from vqtool.registry import model_source

    return model_source(name) not in ("builtin", "torchvision", "timm")
