"""Decode validation: bytes from a mirror or a server count as an image only if Pillow decodes
them whole, as one of :data:`~.fetch_types.ALLOWED_FORMATS`, within the pixel limit."""

from __future__ import annotations

import io

from catret_pipeline.images.fetch_types import ALLOWED_FORMATS, FetchError


def decode_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Validate that ``data`` is a whole image of an allowed format; return (format, w, h).

    The pixel limit is checked here, per decode, right after the header is parsed and before
    any pixel data is decompressed, instead of relying on ``PIL.Image.MAX_IMAGE_PIXELS``
    (process-global; changing it per thread would race). Pillow's own global guard still
    applies on top and is reported as the same reason.
    """
    from PIL import Image, UnidentifiedImageError

    formats = tuple(ALLOWED_FORMATS)
    try:
        with Image.open(io.BytesIO(data), formats=formats) as im:
            fmt, (width, height) = im.format, im.size
            if width <= 0 or height <= 0:
                raise FetchError("corrupt", f"{fmt} declares size {width}x{height}")
            if width * height > max_pixels:
                raise FetchError(
                    "decompression_bomb",
                    f"{fmt} {width}x{height} = {width * height} pixels > max_pixels {max_pixels}",
                )
            # verify() checks structure (PNG CRCs, chunk order) without decoding; it leaves the
            # image unusable, so the real decode needs a fresh open.
            im.verify()
        with Image.open(io.BytesIO(data), formats=formats) as im:
            im.load()
    except FetchError:
        raise
    except Image.DecompressionBombError as exc:
        raise FetchError("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError:
        head = data[:16].lstrip().lower()
        kind = "HTML" if head.startswith((b"<!doctype", b"<html")) else "unrecognised"
        raise FetchError("not_an_image", f"{kind} content, {len(data)} bytes") from None
    except EOFError as exc:
        raise FetchError("truncated", f"decoder hit end of data: {exc}") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, MemoryError) as exc:
        # Pillow reports short data as OSError("image file is truncated ...") or a
        # "broken data stream"/"truncated" message; everything else is structural damage.
        msg = str(exc)
        low = msg.lower()
        if "truncated" in low or "broken data stream" in low or "premature end" in low:
            raise FetchError("truncated", msg) from None
        raise FetchError("corrupt", f"{type(exc).__name__}: {msg}") from None
    return fmt, width, height
