"""Search results for people: a text table and a contact sheet of the product images."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from catret_pipeline.search.results import Hit, SearchResults
from catret_pipeline.storage.artefacts import ArtefactPath, as_artefact_path, open_image_source
from catret_pipeline.storage.atomic import atomic_write_bytes


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def _clip_left(text: str, width: int) -> str:
    # The leaf end of a category path says the most: cut from the root side.
    return text if len(text) <= width else "..." + text[len(text) - max(0, width - 3) :]


def format_results(
    hits: SearchResults | Sequence[Hit],
    query: str,
    model: str,
    setting: str,
    title_width: int = 60,
    path_width: int = 60,
) -> str:
    rows = list(hits)
    source = getattr(hits, "query_source", None)
    head = f'query "{query}"  model {model}  setting {setting}  k={len(rows)}'
    if source:
        head += f"  query vector: {source}"
    lines = [head]
    if not rows:
        lines.append("no results")
    else:
        lines.append(
            f"{'rank':>4}  {'asin':<12}  {'title':<{title_width}}  {'category path':<{path_width}}  score"
        )
        for h in rows:
            title = _clip((h.title or "(no title)").replace("\n", " "), title_width)
            path = _clip_left(" > ".join(h.category_path), path_width)
            lines.append(
                f"{h.rank:>4}  {h.asin:<12}  {title:<{title_width}}  {path:<{path_width}}  {h.score:.4f}"
            )
    for note in getattr(hits, "notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def print_results(
    hits: SearchResults | Sequence[Hit], query: str, model: str, setting: str
) -> None:
    print(format_results(hits, query, model, setting))


TILE = 160
CAPTION_LINES = 3
PAD = 8


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _wrap(draw, text: str, font, width: int, lines: int = CAPTION_LINES - 1) -> list[str]:
    """Word-wrap ``text`` into at most ``lines`` lines; the last one is cut with '...'."""
    words = text.replace("\n", " ").split()
    out: list[str] = []
    while words and len(out) < lines - 1:
        line = words.pop(0)
        while words and draw.textlength(f"{line} {words[0]}", font=font) <= width:
            line = f"{line} {words.pop(0)}"
        out.append(_fit(draw, line, font, width))
    if words:
        out.append(_fit(draw, " ".join(words), font, width))
    return out


def _tile_image(root: ArtefactPath, hit: Hit):
    from PIL import Image, ImageDraw, ImageOps

    tile = Image.new("RGB", (TILE, TILE), (235, 235, 235))
    reason = "no image"
    if hit.image_path:
        try:
            with Image.open(open_image_source(root / hit.image_path)) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
                im = ImageOps.contain(im, (TILE, TILE))
                tile.paste(im, ((TILE - im.width) // 2, (TILE - im.height) // 2))
                return tile
        except Exception:  # a damaged cache file gets the placeholder, not a failed sheet
            reason = "unreadable image"
    draw = ImageDraw.Draw(tile)
    draw.rectangle([0, 0, TILE - 1, TILE - 1], outline=(180, 180, 180))
    font = _font(14)
    w = draw.textlength(reason, font=font)
    draw.text(((TILE - w) / 2, TILE / 2 - 8), reason, fill=(120, 120, 120), font=font)
    return tile


def render_contact_sheet(
    hits: SearchResults | Sequence[Hit], data_dir: str | os.PathLike, title: str, columns: int = 5
):
    """The sheet as a PIL image: header, then one tile per hit with rank, score and title."""
    from PIL import Image, ImageDraw

    root = as_artefact_path(data_dir)
    rows_hits = list(hits)
    cols = max(1, min(columns, len(rows_hits) or 1))
    n_rows = max(1, -(-len(rows_hits) // cols))
    header_font, caption_font = _font(20), _font(12)
    line_h = 15
    header_h = 56
    cell_w, cell_h = TILE + 2 * PAD, TILE + PAD + CAPTION_LINES * line_h + PAD
    width = max(cols * cell_w + PAD, 360)
    sheet = Image.new("RGB", (width, header_h + n_rows * cell_h + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text(
        (PAD, 8), _fit(draw, title, header_font, width - 2 * PAD), fill="black", font=header_font
    )
    model, setting = getattr(hits, "model", None), getattr(hits, "setting", None)
    sub = f"{model} / {setting}" if model else ""
    sub = f"{sub}  ({len(rows_hits)} results)" if rows_hits else f"{sub}  no results"
    draw.text((PAD, 34), sub.strip(), fill=(90, 90, 90), font=caption_font)
    for i, hit in enumerate(rows_hits):
        x = PAD + (i % cols) * cell_w
        y = header_h + (i // cols) * cell_h
        sheet.paste(_tile_image(root, hit), (x + PAD // 2, y))
        ty = y + TILE + 4
        draw.text(
            (x + PAD // 2, ty), f"#{hit.rank}  {hit.score:.3f}", fill="black", font=caption_font
        )
        for j, line in enumerate(_wrap(draw, hit.title or "(no title)", caption_font, TILE)):
            draw.text(
                (x + PAD // 2, ty + (j + 1) * line_h), line, fill=(40, 40, 40), font=caption_font
            )
    return sheet


def write_contact_sheet(
    hits: SearchResults | Sequence[Hit],
    data_dir: str | os.PathLike,
    path: str | os.PathLike,
    title: str,
) -> Path:
    """Write the contact sheet PNG atomically to ``path``; returns its absolute path."""
    image = render_contact_sheet(hits, data_dir, title)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    out = Path(path).expanduser().resolve()
    atomic_write_bytes(out, buf.getvalue())
    return out
