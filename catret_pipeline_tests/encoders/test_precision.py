"""precision="auto": CPU feature detection and the choice it makes, as pure functions."""

from __future__ import annotations

import pytest

from catret_pipeline.config import ENV_CPU_FLAGS, CatretConfig
from catret_pipeline.encoders import precision as prec
from catret_pipeline.encoders.openclip import EFFNET_MODEL, TINY_MODEL, ClipSpec
from catret_pipeline.encoders.text import BUNDLED_MINILM, TextSpec

SPR = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"}
ZEN4 = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
ALDER = {"avx2", "fma", "avx_vnni"}  # int8 VNNI in AVX2 encoding, no bf16
AVX2 = {"avx2", "fma", "f16c"}

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
bugs\t\t: sysret_ss_attrs

processor\t: 1
flags\t\t: fpu sse2
"""


def test_parse_cpuinfo_takes_the_first_flags_line():
    assert prec.parse_cpuinfo_flags(CPUINFO) == {
        "fpu",
        "sse2",
        "avx2",
        "avx512f",
        "avx512_bf16",
        "avx512_vnni",
    }
    assert prec.parse_cpuinfo_flags("Features\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}
    assert prec.parse_cpuinfo_flags("") == frozenset()


@pytest.mark.parametrize(
    ("flags", "bf16", "vnni"),
    [
        (SPR, True, True),
        (ZEN4, True, True),
        (ALDER, False, True),
        (AVX2, False, False),
        (set(), False, False),
    ],
)
def test_feature_predicates(flags, bf16, vnni):
    assert prec.has_native_bf16(flags) is bf16
    assert prec.has_vnni(flags) is vnni
    native, reason = prec.int8_support(flags)
    assert native is vnni
    assert ("no VNNI" in reason) is (not vnni)


@pytest.mark.parametrize(
    ("requested", "device", "flags", "cuda_bf16", "bf16_ok", "expected"),
    [
        ("auto", "cpu", SPR, False, True, "bf16"),
        ("auto", "cpu", ZEN4, False, True, "bf16"),
        ("auto", "cpu", ALDER, False, True, "fp32"),  # VNNI alone is not bf16
        ("auto", "cpu", AVX2, False, True, "fp32"),  # emulated bf16 is ~90x slower
        ("auto", "cpu", SPR, False, False, "fp32"),  # model loses cosine in bf16
        ("auto", "cuda", AVX2, True, True, "bf16"),
        ("auto", "cuda:1", SPR, False, True, "fp32"),  # old GPU: no bf16
        ("auto", "mps", SPR, False, True, "fp32"),
        ("fp32", "cpu", SPR, False, True, "fp32"),  # explicit choices pass through
        ("bf16", "cpu", AVX2, False, True, "bf16"),
        ("int8-onnx", "cpu", AVX2, False, True, "int8-onnx"),
    ],
)
def test_resolve_precision(requested, device, flags, cuda_bf16, bf16_ok, expected):
    got = prec.resolve_precision(requested, device, flags, cuda_bf16=cuda_bf16, bf16_ok=bf16_ok)
    assert got == expected


@pytest.mark.parametrize(
    ("device", "flags", "bf16_ok", "expected"),
    [
        # fp32 ONNX Runtime has no int8 saturation: the same choice with or without VNNI/BF16
        ("cpu", AVX2, False, "onnx"),
        ("cpu", ZEN4, False, "onnx"),
        ("cpu", ALDER, True, "onnx"),  # no native bf16: onnx before fp32 torch
        ("cpu", SPR, True, "bf16"),  # a model fine in bf16 keeps bf16 where it is native
        ("cuda", SPR, False, "fp32"),  # ONNX Runtime's CPU provider is no choice on a GPU
        ("mps", SPR, False, "fp32"),
    ],
)
def test_auto_picks_onnx_on_a_cpu_for_towers_measured_faster_there(
    device, flags, bf16_ok, expected
):
    got = prec.resolve_precision(
        "auto", device, flags, cuda_bf16=True, bf16_ok=bf16_ok, onnx_ok=True
    )
    assert got == expected
    assert prec.resolve_precision("fp32", device, flags, onnx_ok=True) == "fp32"


@pytest.fixture()
def assume_flags():
    yield prec.assume_cpu_flags
    prec.assume_cpu_flags(None)


def test_env_override_of_detected_flags(assume_flags):
    assume_flags(CatretConfig.from_env({ENV_CPU_FLAGS: "avx2, fma"}).cpu_flags)
    assert prec.cpu_flags() == {"avx2", "fma"}
    assume_flags(CatretConfig.from_env({}).cpu_flags)
    assert prec.cpu_flags() == prec._detected_flags()


def test_specs_resolve_auto_per_cpu_and_model(assume_flags):
    assume_flags(SPR)
    assert ClipSpec(TINY_MODEL, device="cpu").resolved_precision() == "bf16"
    assert ClipSpec(TINY_MODEL, device="cpu").model_id.endswith(":bf16")
    # EfficientNet-Lite in bf16 keeps only mean cosine ~0.9991 to fp32: auto runs its fp32 in
    # ONNX Runtime on a CPU, also where bf16 is native; fp32 torch on a GPU
    assert ClipSpec(EFFNET_MODEL, device="cpu").resolved_precision() == "onnx"
    assert ClipSpec(EFFNET_MODEL, device="cuda").resolved_precision() == "fp32"
    onnx = ClipSpec(EFFNET_MODEL, device="cpu", precision="onnx")
    assert onnx.model_id.endswith(":onnx:onnx2")
    text = TextSpec(BUNDLED_MINILM, device="cpu")
    assert text.resolved_precision() == "bf16" and text.model_id.endswith(":seq128:bf16")
    assume_flags(AVX2)
    assert ClipSpec(TINY_MODEL, device="cpu").resolved_precision() == "fp32"
    assert ClipSpec(TINY_MODEL, device="cpu").model_id.endswith(":fp32")
    assert ClipSpec(EFFNET_MODEL, device="cpu").resolved_precision() == "onnx"
    # fp32 text ids are those from before precision existed
    assert TextSpec(BUNDLED_MINILM, device="cpu").model_id.endswith(":seq128")


def test_unknown_text_precision_is_refused():
    with pytest.raises(ValueError, match="fp32"):
        TextSpec(BUNDLED_MINILM, device="cpu", precision="int8").resolved_precision()
