"""Usage data that third-party libraries would send about vqtool's users: declined, in one place."""

from __future__ import annotations


def decline_openvino_telemetry() -> None:
    """OpenVINO's converter and NNCF send usage data to Intel unless the user opted out (a file in their home) or
    CI=true; vqtool sends nothing on its users' behalf. (Offline, the sender also waits on the network in a forked
    process that holds the command's standard output open.)"""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED

