"""The CLIP image tower as an ONNX Runtime session (``precision="onnx"`` at fp32, or
``"int8-onnx"``), CPU only.

The fp32 torch tower is exported with ``torch.onnx.export`` (dynamo, dynamic batch axis) and Gemm
nodes with constant weights are rewritten as MatMul (+ Add). ``onnx`` runs that graph as it is:
for the EfficientNet-Lite tower ONNX Runtime's convolution kernels are ~2.9x torch's on these
CPUs at cosine 1.00000 (docs/benchmarks.md); auto picks it for EfficientNet-Lite0 on a CPU.
``int8-onnx`` then quantises only the MatMuls whose second input is a weight with
``onnxruntime.quantization.quantize_dynamic`` (int8 weights per output channel, uint8
activations quantised per batch at run time). The file is cached on disk, keyed by everything
that changes it, because the export takes ~19 s for ViT-B-32. Before the session is used, a
cosine gate compares it with the fp32 torch tower.

onnx, onnxruntime and onnxscript are imported inside functions only: importing this module (or
:mod:`catret_pipeline.encoders.openclip`) stays free.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: Bumped whenever the export or the graph rewrite changes, so that older cache files are unused.
#: 2: a pooled-trunk tower (EfficientNet-Lite) exports its trunk, the features the torch path
#: embeds; format 1 exported ``encode_image``, i.e. through its random-init projection.
EXPORT_FORMAT = 2
#: What ``quantize_dynamic`` is asked for; part of the cache key.
QUANT_OPTIONS: dict[str, Any] = {
    "weight_type": "QInt8",
    "per_channel": True,
    "op_types_to_quantize": ["MatMul"],
    "nodes_to_quantize": "weight MatMuls only",
    "gemm_weights_to_matmul": True,
}
#: The gate's synthetic images: how many, and the seed that draws them.
GATE_IMAGES = 16
GATE_SEED = 0
#: Exports done by this process (tests check that a second build reuses the cached file).
EXPORTS = 0


class Int8CosineError(ValueError):
    """The ONNX image tower's embeddings drift too far from the fp32 torch ones for this model
    (named for int8, where it happens; an fp32 export failing it is a broken export)."""


def default_cache_dir() -> Path:
    """``./data/onnx_cache`` of the checkout; the edges pass ``<data_dir>/onnx_cache`` instead
    (``CatretConfig.clip``)."""
    from catret_pipeline.config import DEFAULT_DATA_DIR

    return DEFAULT_DATA_DIR / "onnx_cache"


# ---- export and quantisation ----------------------------------------------------------------


def gemm_weights_to_matmul(model) -> int:
    """Rewrite ``Gemm(x, W) [+ C]`` with a constant W as ``MatMul(x, W') [+ Add C]`` in place.

    The exporter emits the attention output projection as Gemm (nn.MultiheadAttention reshapes to
    2-D first) and dynamic quantisation has no integer Gemm, so without this a twelfth of the
    tower's weight FLOPs would stay fp32. Returns the number of nodes rewritten."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, done = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        has_c = len(node.input) > 2 and bool(node.input[2]) and attrs.get("beta", 1.0) != 0
        if (
            node.op_type != "Gemm"
            or node.input[1] not in inits
            or attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or (has_c and attrs.get("beta", 1.0) != 1.0)
        ):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        w_name = f"{node.input[1]}__matmul"
        model.graph.initializer.append(
            numpy_helper.from_array(
                np.ascontiguousarray(w.T if attrs.get("transB", 0) else w), w_name
            )
        )
        out = f"{node.output[0]}__matmul" if has_c else node.output[0]
        nodes.append(
            helper.make_node("MatMul", [node.input[0], w_name], [out], name=f"{node.name}_mm")
        )
        if has_c:
            nodes.append(
                helper.make_node(
                    "Add", [out, node.input[2]], [node.output[0]], name=f"{node.name}_add"
                )
            )
        done += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return done


def export_image_tower(model, image_size: int, pooled_trunk: bool = False):
    """The ONNX ``ModelProto`` of the image features (fp32, input ``pixels`` (batch, 3, s, s),
    output ``features``, dynamic batch), with Gemm weights already rewritten as MatMul: of
    ``model.encode_image``, or of ``model.visual.trunk`` for a ``pooled_trunk`` tower (what
    ``ClipModel`` embeds with it)."""
    import torch

    global EXPORTS

    class Tower(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixels):
            return torch_image_features(self.model, pixels, pooled_trunk)

    example = torch.zeros(2, 3, image_size, image_size)
    # The exporter narrates every step on stdout; kept for the error message if it fails.
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            program = torch.onnx.export(
                Tower(model).eval(),
                (example,),
                input_names=["pixels"],
                output_names=["features"],
                dynamic_shapes={"pixels": {0: torch.export.Dim("batch", min=1, max=4096)}},
                dynamo=True,
            )
    except Exception:
        print(log.getvalue(), file=sys.stderr)
        raise
    EXPORTS += 1
    proto = program.model_proto
    gemm_weights_to_matmul(proto)
    return proto


def torch_image_features(model, pixels, pooled_trunk: bool):
    """The torch tower's unnormalised features: the pooled trunk, or ``encode_image``."""
    return model.visual.trunk(pixels) if pooled_trunk else model.encode_image(pixels)


def weight_matmuls(model) -> list[str]:
    """Names of the MatMul nodes whose second input is a weight (an initializer)."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def quantize_weight_matmuls(
    fp32_path: str | Path,
    out_path: str | Path,
    nodes: list[str],
    per_channel: bool = True,
    reduce_range: bool = False,
) -> None:
    """Dynamic int8 quantisation of ``nodes`` (MatMuls) only.

    Only weight products: quantising QK^T and attention x V (both activations) costs accuracy for
    little time at 50 tokens, and dynamic mode would otherwise pick some of them."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fp32_path,
        out_path,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=reduce_range,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=nodes,
    )


def make_session(path: str | Path, threads: int, spin: bool = False):
    """CPU session: ``threads`` intra-op threads, sequential, all graph optimisations.

    Spinning off by default: on a few shared cores a spinning thread takes the core that the
    decode thread and other processes need."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# ---- cache ----------------------------------------------------------------------------------


def cache_key(
    model_name: str,
    weights_id: str,
    image_size: int,
    reduce_range: bool = False,
    quantise: bool = True,
) -> dict[str, Any]:
    """Everything that changes the exported file (library versions included: the exporter's
    and the quantiser's output differ between releases); ``quantisation`` is None for fp32."""
    import onnx
    import onnxruntime
    import open_clip
    import torch

    return {
        "format": EXPORT_FORMAT,
        "model_name": model_name,
        "model_config": open_clip.get_model_config(model_name),
        "weights": weights_id,
        "image_size": int(image_size),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "quantisation": {**QUANT_OPTIONS, "reduce_range": bool(reduce_range)} if quantise else None,
    }


def cache_file(cache_dir: str | Path, key: dict[str, Any]):
    """The cached tower's path: local, or on an object store when ``cache_dir`` is a URL."""
    from catret_pipeline.storage.artefacts import artefact_root, is_remote

    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key["model_name"])
    name = f"{safe}-{digest[:16]}.{'int8' if key.get('quantisation') else 'fp32'}.onnx"
    root = artefact_root(".", str(cache_dir)) if "://" in str(cache_dir) else None
    if root is not None and is_remote(root):
        return root / name
    return Path(cache_dir).expanduser() / name


def use_reduce_range() -> bool:
    """7-bit weights where the CPU has no VNNI: the AVX2 u8 x s8 kernel (vpmaddubsw) adds pairs
    of products into int16 and saturates with full-range weights; 7 bits leave it headroom.
    With VNNI (int32 accumulation) full range is exact and more accurate."""
    from catret_pipeline.encoders.precision import cpu_flags, int8_support

    return not int8_support(cpu_flags())[0]


def _write_tower(
    model, image_size: int, target, key: dict[str, Any], pooled_trunk: bool = False
) -> None:
    import onnx

    from catret_pipeline.storage.atomic import atomic_path, atomic_write_text

    proto = export_image_tower(model, image_size, pooled_trunk)
    with tempfile.TemporaryDirectory(prefix="catret-onnx-") as tmp:
        fp32_path = Path(tmp) / "tower_fp32.onnx"
        onnx.save(proto, fp32_path)
        written = fp32_path
        if key["quantisation"] is not None:
            written = Path(tmp) / "tower_int8.onnx"
            quantize_weight_matmuls(
                fp32_path,
                written,
                weight_matmuls(proto),
                reduce_range=bool(key["quantisation"].get("reduce_range")),
            )
        # Another process may write the same file at the same time: both are complete, the
        # last rename wins, and readers only ever see a whole file.
        with atomic_path(target) as out:
            out.write_bytes(written.read_bytes())
            out.chmod(0o644)  # mkstemp's 0600 would hide a shared cache from other users
    atomic_write_text(target.with_suffix(".json"), json.dumps(key, indent=2, default=str))


def tower_file(clip, cache_dir: str | Path = "", quantise: bool = True):
    """The cached ONNX tower of ``clip`` (a :class:`~catret_pipeline.encoders.openclip.
    ClipModel` whose torch model is fp32), exported (and quantised) first when missing."""
    reduce_range = use_reduce_range() if quantise else False
    key = cache_key(
        clip.spec.model_name, clip.spec.weights_id(), clip.image_size, reduce_range, quantise
    )
    target = cache_file(cache_dir or default_cache_dir(), key)
    if not target.is_file():
        _write_tower(clip.model, clip.image_size, target, key, clip.pooled_trunk)
    return target


# ---- gate -----------------------------------------------------------------------------------


def iter_synthetic_images(n: int, size: int = 128, seed: int = GATE_SEED) -> Iterator:
    """Photo-like PIL images, one at a time: smooth colour fields plus sensor-like noise (flat
    colour or white noise would exercise the activations, and cost to decode, unlike photos)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for _ in range(n):
        coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
        noisy = base.astype(np.float32) + rng.normal(0.0, 6.0, size=base.shape)
        yield Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def synthetic_images(n: int = GATE_IMAGES, size: int = 128, seed: int = GATE_SEED) -> list:
    return list(iter_synthetic_images(n, size, seed))


def gate_cosine(clip, session) -> float:
    """Mean cosine between the fp32 torch tower and ``session`` on the gate's images."""
    import torch

    images = synthetic_images(size=2 * clip.image_size)
    batch = torch.stack([clip.load_image(img) for img in images]).float()
    with torch.inference_mode():
        ref = torch_image_features(clip.model, batch, clip.pooled_trunk).float().numpy()
    got = session.run(None, {"pixels": batch.numpy()})[0]
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return float(cos.mean())


def build_session(
    clip,
    cache_dir: str | Path = "",
    threads: int = 0,
    min_cosine: float = 0.999,
    quantise: bool = True,
) -> tuple[Any, float, Path]:
    """(session, gate cosine, cached file) for ``clip``'s image tower, int8 (``quantise``) or
    fp32; raises :class:`Int8CosineError` when the gate's mean cosine is below ``min_cosine``."""
    import torch

    threads = threads if threads > 0 else torch.get_num_threads()
    from catret_pipeline.storage.artefacts import staged_input

    def open_session(path):
        # onnxruntime reads a local file once, at session creation: a remote one is staged.
        with staged_input(path) as local:
            return make_session(local, threads)

    path = tower_file(clip, cache_dir, quantise)
    try:
        session = open_session(path)
    except Exception as exc:  # unreadable cache file (disk trouble, foreign file): rebuild once
        print(f"rebuilding unreadable ONNX tower {path}: {exc}", file=sys.stderr)
        path.unlink(missing_ok=True)
        path = tower_file(clip, cache_dir, quantise)
        session = open_session(path)
    cosine = gate_cosine(clip, session)
    if cosine < min_cosine:
        if not quantise:
            raise Int8CosineError(
                f"precision='onnx': the exported fp32 image tower of {clip.spec.model_id} keeps a "
                f"mean cosine of {cosine:.5f} to the torch tower on {GATE_IMAGES} synthetic "
                f"images, below int8_min_cosine={min_cosine}: the export is wrong for this "
                f"model. Use precision='fp32' for the `clip` resource (and delete {path})."
            )
        from catret_pipeline.encoders.precision import cpu_flags, int8_support

        _, capability = int8_support(cpu_flags())
        raise Int8CosineError(
            f"precision='int8-onnx': the int8 image tower of {clip.spec.model_id} keeps a mean "
            f"cosine of {cosine:.5f} to the fp32 tower on {GATE_IMAGES} synthetic images, below "
            f"int8_min_cosine={min_cosine}. int8 weights change this model's image embeddings "
            "too much: use precision='bf16' (or 'fp32') for the `clip` resource, or lower "
            f"int8_min_cosine only if that loss is acceptable. ({capability}.)"
        )
    return session, cosine, path
