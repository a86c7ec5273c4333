"""Whether a download can work, asked before any library gets the chance to retry for minutes."""

from __future__ import annotations

import socket

PROBE_SECONDS = 3.0


def reachable(host: str, port: int = 443) -> bool:
    """Whether ``host`` answers within a few seconds (an offline machine fails at once)."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False
