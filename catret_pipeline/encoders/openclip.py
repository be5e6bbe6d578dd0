"""open_clip image and text towers for inference: the loaded model and batched encoding.

The public face of the open_clip encoder: :func:`load_clip` (built once per process per spec)
and :class:`ClipModel` live here, with the spec's names re-exported. The parts, after open_clip's
own pretrained / factory / transform split: :mod:`~catret_pipeline.encoders.clip_spec` (which
model, its weights and ``model_id``), :mod:`~catret_pipeline.encoders.clip_loading` (creating
the model) and :mod:`~catret_pipeline.encoders.image_decode` (images to model input). torch and
open_clip are imported lazily, so importing this module is free; the Dagster resource in
:mod:`catret_pipeline.encoders.resources` is a thin config layer over :func:`load_clip`.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from catret_pipeline.encoders.clip_loading import create_model, set_threads
from catret_pipeline.encoders.clip_spec import (
    AUTO,
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    EFFNET_MODEL,
    INT8_ONNX,
    ONNX,
    ORT_PRECISIONS,
    PRECISIONS,
    TINY_MODEL,
    ClipSpec,
    WeightsUnavailableError,
    model_id_is_aligned,
)
from catret_pipeline.encoders.image_decode import Decoded, ImageLoader, ProcessDecoder
from catret_pipeline.encoders.onnx_image import torch_image_features

__all__ = [
    "AUTO",
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
    "EFFNET_MODEL",
    "INT8_ONNX",
    "ONNX",
    "ORT_PRECISIONS",
    "PRECISIONS",
    "TINY_MODEL",
    "ClipModel",
    "ClipSpec",
    "ImageEncodeResult",
    "ProgressFn",
    "WeightsUnavailableError",
    "load_clip",
    "model_id_is_aligned",
    "set_threads",
]

#: (done, total) after every batch.
ProgressFn = Callable[[int, int], None]

_MODEL_CACHE: dict[tuple, ClipModel] = {}
_CACHE_LOCK = threading.Lock()


def load_clip(spec: ClipSpec) -> ClipModel:
    """The loaded model for ``spec``: built once per process, shared by every caller."""
    device = spec.resolved_device()
    precision = spec.resolved_precision(device)
    key = (spec, device, precision)
    with _CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = _MODEL_CACHE[key] = _build(spec, device, precision)
    return model


def _build(spec: ClipSpec, device: str, precision: str) -> ClipModel:
    created = create_model(spec, device, precision)
    clip = ClipModel(
        spec=spec,
        device=device,
        model=created.model,
        preprocess=created.preprocess,
        tokenizer=created.tokenizer,
        precision=precision,
        pooled_trunk=created.pooled_trunk,
    )
    if precision in ORT_PRECISIONS:
        from catret_pipeline.encoders.onnx_image import build_session

        session, cosine, path = build_session(
            clip,
            cache_dir=spec.onnx_cache_dir,
            threads=spec.onnx_threads,
            min_cosine=spec.int8_min_cosine,
            quantise=precision == INT8_ONNX,
        )
        clip.image_session, clip.int8_cosine, clip.onnx_path = session, cosine, str(path)
    return clip


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
    #: onnx, int8-onnx: the ONNX Runtime session that replaces the torch image tower.
    image_session: Any = field(default=None, repr=False, compare=False)
    #: onnx, int8-onnx: mean cosine of the session to the fp32 tower on the gate's images.
    int8_cosine: float | None = None
    #: onnx, int8-onnx: the cached exported tower the session runs.
    onnx_path: str | None = None
    #: The precision the model runs at (``auto`` resolved): fp32, bf16, onnx or int8-onnx.
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

    @property
    def loader(self) -> ImageLoader:
        return ImageLoader(self.preprocess, self.image_size)

    def _process_decoder(self, processes: int) -> ProcessDecoder:
        # Kept for the life of the model: starting workers costs seconds (imports), which a
        # per-call pool would pay on every checkpoint chunk.
        with _CACHE_LOCK:
            decoder = self.decoders.get(processes)
            if decoder is None:
                decoder = self.decoders[processes] = ProcessDecoder(self.loader, processes)
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
            return torch_image_features(self.model, batch, self.pooled_trunk)

    # ---- images -------------------------------------------------------------------------

    def load_image(self, item):
        """One image as model input (see :meth:`ImageLoader.load`)."""
        return self.loader.load(item)

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
        loader = self.loader
        processes = self._process_decoder(decode_processes) if decode_processes > 0 else None
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-prefetch") as prefetch,
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clip-decode") as pool,
        ):

            def decode(lo: int) -> Future[Decoded]:
                if processes is not None:
                    return prefetch.submit(processes, items[lo : lo + batch_size])
                return prefetch.submit(
                    loader.decode_parallel, items[lo : lo + batch_size], pool, workers
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
