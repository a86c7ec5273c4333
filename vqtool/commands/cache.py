"""vqtool cache list / clear: the store of decoded pixels and frozen-backbone features on disk."""

from __future__ import annotations

import time

import click

from vqtool.commands.types import FiniteFloat

from vqtool.commands import output_options


@click.group()
def cache():
    """The store of decoded images and backbone features ($VQTOOL_CACHE_DIR, default ~/.cache/vqtool).

    \b
    Examples:
      vqtool cache list
      vqtool cache clear --older-than 30
    """


@cache.command("list")
@output_options
def list_entries(out):
    """List the store's entries: what data each holds, its size and last use.

    \b
    Examples:
      vqtool cache list
      vqtool cache list --json
    """
    from vqtool.data.store import cache_root, entries

    rows = entries()
    if out.json:
        out.emit({"cache_dir": str(cache_root()), "entries": rows, "bytes": sum(r["bytes"] for r in rows)})
        return
    out.table(["kind", "key", "data", "rows", "shape", "MB", "last used"],
              [[r["kind"], r["key"][:12], _what(r), r.get("rows"), "x".join(map(str, r.get("shape") or [])) or "-",
                f"{r['bytes'] / 1e6:.1f}", _when(r["last_used"])] for r in rows])
    out.log(f"{len(rows)} entries, {sum(r['bytes'] for r in rows) / 1e6:.1f} MB in {cache_root()}")


@cache.command()
@click.option("--older-than", type=FiniteFloat(0), default=None, metavar="DAYS",
              help="Only entries not used for DAYS days (default: all).")
@output_options
def clear(older_than, out):
    """Remove entries of the store (entries being built by another process are left).

    \b
    Examples:
      vqtool cache clear
      vqtool cache clear --older-than 30
    """
    from vqtool.data.store import cache_root, clear as clear_store

    removed = clear_store(older_than)
    freed = sum(r["bytes"] for r in removed)
    if out.json:
        out.emit({"cache_dir": str(cache_root()), "removed": len(removed), "bytes": freed})
        return
    out.text(f"removed {len(removed)} entries ({freed / 1e6:.1f} MB) from {cache_root()}")


def _what(row: dict) -> str:
    if row.get("damaged"):
        return f"(damaged: {row['damaged']})"
    if not row["complete"]:
        return "(incomplete)"
    return f"{row.get('data') or '?'} ({row.get('what') or row['kind']})"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))
