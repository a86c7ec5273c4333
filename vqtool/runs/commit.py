"""Epoch commits: the files that describe one epoch of a run change together, or not at all.

After each epoch a training run replaces several files at once (the best
weights and model.json when the epoch improved, metrics.csv, state.pt, and
curves.png when it is redrawn). Renaming each into place on its own would
leave a folder killed between two renames holding two epochs. Instead:

1. **stage**: every new file is written into a fresh folder ``RUN/.staging-XXXX/``;
2. **switch**: the staging folder is renamed to ``RUN/.commit/`` — one rename,
   the instant the new epoch becomes the run's;
3. **install**: each file is moved from ``.commit/`` over its name in ``RUN/``,
   then ``.commit/`` is removed.

Readers look a name up in ``.commit/`` first (:func:`committed`): before the
switch they see only the old epoch's files, after it only the new epoch's,
whether or not the install has moved them yet. A folder killed at any instant
therefore reads as epoch k or k+1, never a mix. :func:`recover`, run before
every commit and when a run is resumed, finishes an interrupted install (roll
forward) and deletes staging folders and stray temporary files (roll back).

A name may be a path inside the run folder (``ultralytics/weights/last.pt``: a
detector's checkpoint changes with its metrics row). Only what vqtool made is
installed: a ``.commit`` that is a link, or holds links or anything but regular
files, is refused, so a run folder never takes in another folder's files.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable

from vqtool.errors import VQError
from vqtool.files import is_real_folder
from vqtool.runs.folder import RUN_FILES
from vqtool.runs.atomic_files import TEMP_MARK, settle, umask, write_failure

COMMIT_DIR = ".commit"
STAGING_PREFIX = ".staging-"


def committed(run_dir: Path, name: str) -> Path:
    """Where the run's current ``name`` is: in the switched-in commit if one is being installed, else in place."""
    pending = Path(run_dir) / COMMIT_DIR / name
    return pending if is_real_folder(Path(run_dir) / COMMIT_DIR) and pending.exists() else Path(run_dir) / name


def new_staging(run_dir: Path) -> Path:
    """A fresh staging folder in the run: what is written into it (as run-relative paths) joins the next
    :func:`commit` given it, or is removed by :func:`recover` if the process dies first."""
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=run_dir))
    os.chmod(staging, 0o777 & ~umask())  # mkdtemp makes it 0700; readers of other users follow the umask
    return staging


def commit(run_dir: Path, files: dict[str, Callable[[Path], None]], staging: Path | None = None) -> None:
    """Replace the run's ``files`` (name -> ``save(path)``, which writes the new file) as one change, with
    what was already written into ``staging`` (from :func:`new_staging`)."""
    run_dir = Path(run_dir)
    recover(run_dir, keep=staging)
    try:
        staging = staging or new_staging(run_dir)
        for name, save in files.items():
            _stage(staging / name, save)
        for written in _staged_files(staging, run_dir):
            settle(written)
        _sync_folder(staging)
        _switch(staging, run_dir / COMMIT_DIR)
    except BaseException as error:
        reason = write_failure(error, run_dir) if isinstance(error, Exception) else None
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if reason is not None:
            kept = "keeps its previous epoch" if committed(run_dir, "metrics.csv").exists() else "holds no epoch yet"
            raise VQError(f"{run_dir}: cannot save the epoch's files ({reason}); the run folder {kept}") from error
        raise
    _sync_folder(run_dir)
    install_commit(run_dir)


def _stage(path: Path, save: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save(path)


def _switch(staging: Path, commit_dir: Path) -> None:
    os.rename(staging, commit_dir)


def install_commit(run_dir: Path) -> None:
    """Move a switched-in commit's files to their places in the run folder (each move atomic, any order)."""
    commit_dir = Path(run_dir) / COMMIT_DIR
    if not os.path.lexists(commit_dir):
        return
    staged = [(path, Path(run_dir) / path.relative_to(commit_dir)) for path in _staged_files(commit_dir, run_dir)]
    for _, destination in staged:
        _refuse_linked_folders(Path(run_dir), destination)
    for path, destination in staged:
        _install(path, destination)
    for folder, _, _ in sorted(os.walk(commit_dir), key=lambda entry: -len(entry[0])):  # deepest first
        os.rmdir(folder)
    _sync_folder(run_dir)


def _staged_files(commit_dir: Path, run_dir) -> list[Path]:
    """The regular files of a commit vqtool made; VQError for anything else (a link, a device)."""
    if not is_real_folder(commit_dir):
        raise VQError(f"{commit_dir} is not a folder vqtool made (a link or a file); remove it and resume "
                      f"{run_dir} again")
    files = []
    for folder, folders, names in os.walk(commit_dir):  # links to folders are listed in folders, never entered
        for name in [*folders, *names]:
            path = Path(folder) / name
            mode = os.lstat(path).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise VQError(f"{path}: not a file vqtool staged (a link or a special file); remove "
                              f"{commit_dir} and resume {run_dir} again")
            if stat.S_ISREG(mode):
                files.append(path)
    return sorted(files)


def _refuse_linked_folders(run_dir: Path, destination: Path) -> None:
    """A run's file goes into the run folder itself: no folder on the way there may be a link to elsewhere."""
    for folder in destination.relative_to(run_dir).parents[:-1]:  # the run folder itself ('.') may be a link
        if (run_dir / folder).is_symlink():
            raise VQError(f"{run_dir / folder} is a symbolic link; vqtool writes a run's files only inside its "
                          f"own folder (copy the files in instead)")


def _install(staged: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, destination)


def recover(run_dir: Path, keep: Path | None = None) -> None:
    """Finish an interrupted commit and remove what a killed writer left: staging folders (but ``keep``, being
    filled for the next commit), temporary files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    install_commit(run_dir)
    for leftover in run_dir.iterdir():
        if leftover == keep:
            continue
        if leftover.name.startswith(STAGING_PREFIX) and leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        elif _temporary_run_file(leftover.name) and leftover.is_file():
            leftover.unlink(missing_ok=True)


def _temporary_run_file(name: str) -> bool:
    """A temporary file of one of the run's own files (``.state.pt.123-ab12.tmp.pt``, or older vqtools'
    ``.model.json.k3j2.tmp``): never a file of the user's."""
    return TEMP_MARK in name and name.startswith(tuple(f".{own}." for own in RUN_FILES))


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that the renames in it survive a power cut (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
