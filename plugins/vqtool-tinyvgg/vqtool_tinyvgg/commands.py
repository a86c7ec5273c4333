"""`vqtool tinyvgg`: a subcommand this plugin adds (entry point group ``vqtool.commands``).

Plugins' commands follow vqtool's rules: results on stdout, one ``Error:`` line
for a VQError (the root group turns it into one), no torch at import time.
"""

import json

import click


@click.command("tinyvgg")
@click.option("--size", type=click.IntRange(4), default=64, show_default=True, help="Input side in pixels.")
@click.option("--classes", type=click.IntRange(1), default=10, show_default=True)
def info(size, classes):
    """Print TinyVGG's parameter count at an input size, as JSON.

    \b
    Examples:
      vqtool tinyvgg
      vqtool tinyvgg --size 32 --classes 3
    """
    from vqtool_tinyvgg.model import TinyVGG

    model = TinyVGG(classes, 3, size=size)
    click.echo(json.dumps({"model": "tinyvgg", "size": size, "parameters": sum(p.numel() for p in model.parameters())}))
