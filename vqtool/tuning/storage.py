"""Where a study lives: an SQLite file in the study folder by default, any Optuna RDB URL (PostgreSQL, MySQL,
SQLite) or an Optuna journal file (``journal:PATH``) shared by several `vqtool tune` processes.

Optuna is an optional extra (``pip install 'vqtool[tune]'``): :func:`require_optuna` is the one import of it that
says so in one line when it is missing.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from vqtool.errors import VQError, first_line

DATABASE_FILE = "study.db"
JOURNAL_PREFIX = "journal:"
# Seconds a database waits for another process's write (SQLite's lock) or for a server to answer
# (PostgreSQL, MySQL): several workers writing at once wait their turn, an unreachable server fails in one line.
WAIT_S = 60
CONNECT_S = 10


def require_optuna():
    """The optuna module, or one error line with the command that installs it."""
    try:
        import optuna
    except ImportError as error:
        raise VQError(f"vqtool tune needs Optuna ({first_line(error)}); install it with: "
                      f"pip install 'vqtool[tune]' (or pip install optuna)") from error
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # vqtool says what happens, once, on its reporter
    return optuna


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / DATABASE_FILE}"


def shown(url: str) -> str:
    """The storage as it may be printed: an RDB URL without its password."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: printed as the user typed it, up to the first ':' after a user name
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str):
    """The Optuna storage ``url`` names; a URL that cannot be used is one error line (exit 2)."""
    optuna = require_optuna()
    if url.startswith(JOURNAL_PREFIX):
        return _journal(optuna, url[len(JOURNAL_PREFIX):])
    try:
        from sqlalchemy.engine import make_url

        dialect = make_url(url).get_backend_name()
    except Exception as error:  # sqlalchemy.exc.ArgumentError, or a value that is not a string URL
        raise VQError(f"--storage {shown(url)}: not a database URL ({first_line(error)}); use e.g. "
                      f"sqlite:///study.db, postgresql://user@host/db or journal:study.log", usage=True) from error
    engine_kwargs = {"connect_args": {"timeout": WAIT_S} if dialect == "sqlite" else {"connect_timeout": CONNECT_S}}
    try:
        return _rdb_storage(optuna, url, engine_kwargs)
    except ImportError as error:
        raise VQError(f"--storage {shown(url)}: the database driver for {dialect} is not installed "
                      f"({first_line(error.__cause__ or error)}); install it (PostgreSQL: pip install "
                      f"'psycopg[binary]', MySQL: pip install pymysql and a mysql+pymysql:// URL)", usage=True) from error
    except Exception as error:
        if type(error).__name__ == "NoSuchModuleError":  # sqlalchemy knows no such kind of database
            raise VQError(f"--storage {shown(url)}: no database kind {dialect!r} (use sqlite, postgresql or mysql, "
                          f"or journal:PATH)", usage=True) from error
        # sqlalchemy's and the driver's other errors: no such server, file or database, no permission
        raise VQError(f"--storage {shown(url)}: cannot open it ({_reason(error)})", usage=True) from error


def _rdb_storage(optuna, url: str, engine_kwargs: dict, attempts: int = 4):
    """Optuna's RDBStorage; workers starting together on a new database race to create its tables, and the
    losers (a unique or "already exists" error) simply open it again."""
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as error:
            if attempt == attempts - 1 or type(error).__name__ not in ("IntegrityError", "OperationalError") or not (
                    "UNIQUE" in str(error) or "already exists" in str(error) or "locked" in str(error)):
                raise
            time.sleep(0.2 + random.random())


def _journal(optuna, path: str):
    if not path:
        raise VQError("--storage journal:PATH needs a file path after journal:", usage=True)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise VQError(f"--storage journal:{path}: no folder {folder}", usage=True)
    if os.path.exists(path) and not os.path.isfile(path):
        raise VQError(f"--storage journal:{path}: not a regular file", usage=True)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    try:  # the open() lock, unlike the default symlink lock, works on NFS and on file systems without links
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    except (OSError, ValueError) as error:
        raise VQError(f"--storage journal:{path}: cannot use it ({_reason(error)})", usage=True) from error


def _reason(error: BaseException) -> str:
    """The first line of what the driver said (sqlalchemy wraps it: the original is the more telling)."""
    original = getattr(error, "orig", None) or error.__cause__ or error
    return first_line(original)
