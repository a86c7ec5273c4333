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
    from vqtool import catalog, registry

    rows = live_model_rows(pattern) if registry.loaded("models") else catalog.model_rows(pattern)
    if out.json:
        out.emit(rows)
        return
    out.table(["name", "source", "input", "description"],
              [[r["name"], r["source"], r.get("input_size"), r.get("description", "")] for r in rows])
    out.log(f"{len(rows)} models")


def live_model_rows(pattern: str | None = None) -> list[dict]:
    """Rows of `vqtool models` from the imported registry (what catalog.json is written from)."""
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
    return rows


def live_dataset_rows() -> list[dict]:
    """Rows of `vqtool datasets` from the imported registry."""
    from vqtool.registry import dataset_sources

    return [{"name": s.name, "kind": "path" if s.matches else "name", "task": s.task, "source": s.source,
             "description": s.description} for s in dataset_sources().values()]


@click.command()
@output_options
def datasets(out):
    """List dataset sources: names to pass as DATASET, and path formats.

    \b
    Examples:
      vqtool datasets
      vqtool datasets --json
    """
    from vqtool import catalog, registry

    rows = live_dataset_rows() if registry.loaded("datasets") else catalog.dataset_rows()
    if out.json:
        out.emit(rows)
        return
    out.table(["name", "kind", "task", "source", "description"],
              [[r["name"], r["kind"], r["task"], r["source"], r["description"]] for r in rows])


@click.command()
@click.option("--check", is_flag=True,
              help="Import each plugin: list what it registered, and any error (imports torch: slower).")
@output_options
def plugins(check, out):
    """List installed plugins, their versions and the models and datasets they declare.

    Set VQTOOL_PLUGINS=none (or a comma-separated list) to restrict which load.

    \b
    Examples:
      vqtool plugins
      vqtool plugins --check --json
    """
    from vqtool import catalog, registry

    found = registry.plugins() if check or registry.loaded("models") else catalog.declared_plugins()
    rows = [{"name": name, **info} for name, info in found.items()]
    if out.json:
        out.emit(rows)
        return
    if not rows:
        out.text("no plugins installed")
        return
    out.table(["plugin", "version", "models", "datasets", "error"],
              [[r["name"], r["version"], ", ".join(r["models"]), ", ".join(r["datasets"]), r["error"]]
               for r in rows])
