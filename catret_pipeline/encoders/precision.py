"""CPU feature detection and the ``precision="auto"`` choice, as pure functions.

Machines of the same cloud "kind" differ: some CPUs (Intel Sapphire Rapids, AMD Zen 4) execute
bfloat16 and int8 dot products natively (AVX-512 BF16 / AMX, VNNI), others are AVX2 only, where
torch emulates bf16 (a 1024x1024 matmul ran ~90x slower than fp32) and ONNX Runtime's int8
kernels lose accuracy (u8s8 without VNNI saturates: cosine 0.9974 to fp32 on the project's image
tower). So ``auto`` picks bf16 only where the CPU has it natively, and callers ask
:func:`int8_support` before relying on int8.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

AUTO = "auto"
#: Any of these means the CPU computes bf16 dot products in hardware.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: Any of these means int8 dot products with int32 accumulation in hardware (no u8s8 saturation).
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: Flags assumed instead of the detected ones (``CATRET_CPU_FLAGS``, set by the edges from
#: ``CatretConfig.cpu_flags``), to reproduce another machine's choice: {"avx2", "fma"} behaves
#: like an AVX2-only CPU. Process-wide like the CPU itself; None = detected.
_ASSUMED: frozenset[str] | None = None


def parse_cpuinfo_flags(text: str) -> frozenset[str]:
    """The ``flags`` of the first processor in a /proc/cpuinfo text (x86; ``Features`` on ARM)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def _detected_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return parse_cpuinfo_flags(fh.read())
    except OSError:  # not Linux: no flags known, so every choice falls back to fp32
        return frozenset()


def assume_cpu_flags(flags: Iterable[str] | None) -> None:
    """Make :func:`cpu_flags` answer ``flags`` (None: the detected ones again)."""
    global _ASSUMED
    _ASSUMED = None if flags is None else frozenset(flags)


def cpu_flags() -> frozenset[str]:
    return _detected_flags() if _ASSUMED is None else _ASSUMED


def has_native_bf16(flags: Iterable[str]) -> bool:
    return not NATIVE_BF16_FLAGS.isdisjoint(flags)


def has_vnni(flags: Iterable[str]) -> bool:
    return not VNNI_FLAGS.isdisjoint(flags)


def resolve_precision(
    requested: str,
    device: str,
    flags: Iterable[str],
    *,
    cuda_bf16: bool = False,
    bf16_ok: bool = True,
    onnx_ok: bool = False,
) -> str:
    """The precision a model runs at: ``requested`` unless it is ``auto``.

    ``auto``: on a CPU, bf16 where the CPU has native bf16 and the model keeps cosine >= 0.999
    to fp32 in bf16 (``bf16_ok``); else ``onnx`` (the fp32 image tower in ONNX Runtime) for a
    model measured faster and exact there (``onnx_ok``); else fp32. On CUDA, bf16 where the GPU
    supports it (``cuda_bf16``) and ``bf16_ok``, else fp32; any other device fp32. ``onnx`` does
    not depend on the CPU's flags: fp32 kernels have no int8 saturation to fear on AVX2.
    """
    if requested != AUTO:
        return requested
    if device.startswith("cuda"):
        return "bf16" if cuda_bf16 and bf16_ok else "fp32"
    if device == "cpu":
        if bf16_ok and has_native_bf16(flags):
            return "bf16"
        return "onnx" if onnx_ok else "fp32"
    return "fp32"


def cuda_bf16_supported(device: str) -> bool:
    if not device.startswith("cuda"):
        return False
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def int8_support(flags: Iterable[str]) -> tuple[bool, str]:
    """(native, reason): whether int8 ONNX Runtime kernels run without u8s8 saturation here."""
    flags = frozenset(flags)
    if has_vnni(flags):
        found = sorted(VNNI_FLAGS & flags)
        return True, f"CPU has int8 dot-product instructions ({', '.join(found)})"
    return False, (
        "CPU has no VNNI/AMX-INT8 (none of "
        + ", ".join(sorted(VNNI_FLAGS))
        + "): ONNX Runtime's int8 MatMul saturates intermediate sums, so int8 cannot meet the "
        "0.999 cosine gate here"
    )
