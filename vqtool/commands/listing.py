"""vqtool models / datasets / plugins: what the registries hold."""

from __future__ import annotations

import click

from vqtool.commands import output_options


@click.command()
@click.argument("pattern", required=False)
@output_options
def models(pattern, out):
    """List registered models, optionally filtered by a wildcard PATTERN.

    Built-ins and plugins show their input size and parameters; torchvision
    and timm architectures are listed by name.

    \b
    Examples:
      vqtool models
      vqtool models 'timm/efficientnet*' --json
    """
    from vqtool.registry import model_names, model_source, registered_models

    registered = registered_models()
    rows = []
    for name in model_names(pattern):
        entry = registered.get(name)
        row = {"name": name, "source": model_source(name)}
        if entry is not None:
            row.update(input_size=entry.input_size, fixed_size=entry.fixed_size, in_channels=entry.in_channels,
                       description=entry.description)
        rows.append(row)
    if out.json:
        out.emit(rows)
        return
    out.table(["name", "source", "input", "description"],
              [[r["name"], r["source"], r.get("input_size"), r.get("description", "")] for r in rows])
    out.log(f"{len(rows)} models")


@click.command()
@output_options
def datasets(out):
    """List dataset sources: names to pass as DATASET, and path formats.

    \b
    Examples:
      vqtool datasets
      vqtool datasets --json
    """
    from vqtool.registry import dataset_sources

    rows = [{"name": s.name, "kind": "path" if s.matches else "name", "task": s.task, "source": s.source,
             "description": s.description} for s in dataset_sources().values()]
    if out.json:
        out.emit(rows)
        return
    out.table(["name", "kind", "task", "source", "description"],
              [[r["name"], r["kind"], r["task"], r["source"], r["description"]] for r in rows])


@click.command()
@output_options
def plugins(out):
    """List installed plugins, their versions and what each registered.

    Set VQTOOL_PLUGINS=none (or a comma-separated list) to restrict which load.

    \b
    Examples:
      vqtool plugins --json
    """
    from vqtool.registry import plugins as installed

    rows = [{"name": name, **info} for name, info in installed().items()]
    if out.json:
        out.emit(rows)
        return
    if not rows:
        out.text("no plugins installed")
        return
    out.table(["plugin", "version", "models", "datasets", "error"],
              [[r["name"], r["version"], ", ".join(r["models"]), ", ".join(r["datasets"]), r["error"]]
               for r in rows])
