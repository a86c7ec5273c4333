"""What the CPU we run on can do fast: the one place that asks, so every speed decision and figure agrees.

Machines of the same kind differ (NOTES.md): some have AMX and AVX-512 BF16,
where bf16 autocast is about 2.8x fp32, others AVX-512 VNNI only, where it is
2-3x slower. So we detect, never assume, from three sources: the kernel's
/proc/cpuinfo flags, torch's own CPU checks (private, so each is optional;
``torch.ops.mkldnn._is_mkldnn_bf16_supported`` is deliberately not used: it is
also true where bf16 is only emulated) and, when asked and installed,
OpenVINO's ``OPTIMIZATION_CAPABILITIES``. ``describe()`` is the short string
printed beside every speed figure.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

from vqtool.telemetry import decline_openvino_telemetry

# The flags that decide our speed, in the order they are printed (best first).
FLAGS = ("amx_bf16", "amx_int8", "amx_fp16", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni", "avx512f",
         "avx2")
NATIVE_BF16 = ("amx_bf16", "avx512_bf16")  # bf16 computed by the hardware, not emulated through fp32
NATIVE_INT8 = ("amx_int8", "avx512_vnni", "avx_vnni")
# torch.cpu's private checks and the flag each confirms (absent in some torch versions: skipped then).
TORCH_CHECKS = {"_is_amx_tile_supported": "amx_bf16", "_is_avx512_bf16_supported": "avx512_bf16",
                "_is_vnni_supported": "avx512_vnni", "_is_avx512_supported": "avx512f", "_is_avx2_supported": "avx2"}
CPUINFO = Path("/proc/cpuinfo")


@dataclasses.dataclass(frozen=True)
class CpuFeatures:
    """The speed-relevant features of this CPU and where they were read."""

    flags: frozenset[str]
    torch_capability: str | None = None  # torch.backends.cpu.get_cpu_capability(): the kernels torch dispatches to
    openvino: tuple[str, ...] | None = None  # OpenVINO's OPTIMIZATION_CAPABILITIES, None when not asked or absent
    threads: int = 1

    @property
    def native_bf16(self) -> bool:
        return any(flag in self.flags for flag in NATIVE_BF16)

    @property
    def native_int8(self) -> bool:
        return any(flag in self.flags for flag in NATIVE_INT8)

    @property
    def bf16_flags(self) -> list[str]:
        return [flag for flag in NATIVE_BF16 if flag in self.flags]

    def describe(self) -> str:
        """One line, e.g. ``CPU avx512_vnni avx512f avx2 (no native bf16), torch AVX512, 2 threads``."""
        listed = " ".join(flag for flag in FLAGS if flag in self.flags) or "no AVX2/AVX-512"
        parts = [f"CPU {listed} ({'native bf16' if self.native_bf16 else 'no native bf16'})"]
        if self.torch_capability:
            parts.append(f"torch {self.torch_capability}")
        if self.openvino is not None:
            parts.append(f"OpenVINO {'/'.join(self.openvino) or '-'}")
        parts.append(f"{self.threads} thread{'s' if self.threads != 1 else ''}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {"flags": [flag for flag in FLAGS if flag in self.flags], "native_bf16": self.native_bf16,
                "native_int8": self.native_int8, "torch_capability": self.torch_capability,
                "openvino": list(self.openvino) if self.openvino is not None else None, "threads": self.threads,
                "summary": self.describe()}


def cpuinfo_flags(text: str) -> frozenset[str]:
    """The speed-relevant flags of /proc/cpuinfo's text (those of its first processor)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split()) & frozenset(FLAGS)
    return frozenset()


def torch_flags() -> tuple[frozenset[str], str | None]:
    """The flags torch's own CPU checks confirm, and the capability torch dispatches to."""
    import torch

    found = {flag for name, flag in TORCH_CHECKS.items()
             if getattr(torch.cpu, name, None) is not None and _true(getattr(torch.cpu, name))}
    if "amx_bf16" in found:
        found.add("amx_int8")  # AMX tiles come with both (torch checks the tile unit only)
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    return frozenset(found), capability


def _true(check) -> bool:
    try:
        return bool(check())
    except (RuntimeError, OSError):
        return False


def openvino_capabilities() -> tuple[str, ...] | None:
    """OpenVINO's CPU capabilities (FP32, BF16, INT8...), or None when OpenVINO is not installed."""
    decline_openvino_telemetry()  # before the import, which sets telemetry up
    try:
        import openvino
    except ImportError:
        return None
    try:
        return tuple(str(c) for c in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # a plugin that fails to load reports nothing rather than stopping the command
        return ()


def cpu_features(with_openvino: bool = False) -> CpuFeatures:
    """This machine's features (detected once per process; OpenVINO is imported only when asked) and the
    number of threads torch uses now."""
    import torch

    return dataclasses.replace(_detected(with_openvino), threads=torch.get_num_threads() or os.cpu_count() or 1)


@functools.lru_cache(maxsize=2)
def _detected(with_openvino: bool) -> CpuFeatures:
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        text = ""
    from_torch, capability = torch_flags()
    return CpuFeatures(flags=cpuinfo_flags(text) | from_torch, torch_capability=capability,
                       openvino=openvino_capabilities() if with_openvino else None)
