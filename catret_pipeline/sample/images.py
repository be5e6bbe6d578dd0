"""Synthetic product images whose pixels carry category signal.

The background (base colour + texture) says which root a product belongs to; a foreground
shape with its own colour says which leaf. Per-product jitter (position, size, rotation,
colour, noise) keeps two images of one leaf different, so even a randomly initialised image
encoder separates categories only approximately - like real photos, only easier.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "ring",
    "cross",
    "h_stripes",
    "v_stripes",
    "hexagon",
    "star",
)

#: Foreground colours, far apart in hue so leaves of one root stay distinguishable.
COLOURS = (
    (220, 40, 40),
    (245, 140, 20),
    (240, 220, 30),
    (60, 190, 60),
    (30, 200, 210),
    (40, 80, 230),
    (140, 60, 210),
    (230, 60, 170),
    (245, 245, 245),
    (20, 20, 20),
)

TEXTURES = ("plain", "gradient", "diagonal", "dots", "grid")


@dataclass(frozen=True)
class LeafStyle:
    shape: str
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class RootStyle:
    background: tuple[int, int, int]
    texture: str


def _background(style: RootStyle, rng: np.random.Generator, size: int) -> np.ndarray:
    base = np.asarray(style.background, dtype=np.float32) + rng.uniform(-18, 18, size=3)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    period = max(size // 8, 2)
    if style.texture == "gradient":
        img += (yy[..., None] - 0.5) * 50.0
    elif style.texture == "diagonal":
        phase = int(rng.integers(0, period))
        band = ((np.arange(size)[:, None] + np.arange(size)[None, :] + phase) // period) % 2
        img += (band[..., None] * 2.0 - 1.0) * 14.0
    elif style.texture == "dots":
        offset = int(rng.integers(0, period))
        grid = np.arange(size)
        on = ((grid[:, None] + offset) % period < period // 2) & (
            (grid[None, :] + offset) % period < period // 2
        )
        img += on[..., None] * 28.0
    elif style.texture == "grid":
        grid = np.arange(size)
        line = (grid[:, None] % period == 0) | (grid[None, :] % period == 0)
        img -= line[..., None] * 30.0
    return img


def _polygon(
    cx: float, cy: float, radius: float, angle: float, vertices: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Scale unit-circle ``vertices`` by ``radius``, rotate by ``angle``, move to the centre."""
    cos, sin = math.cos(angle), math.sin(angle)
    return [
        (cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos)) for x, y in vertices
    ]


def _regular(n: int, start: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [
        (math.cos(start + 2 * math.pi * k / n), math.sin(start + 2 * math.pi * k / n))
        for k in range(n)
    ]


def _bars(horizontal: bool) -> list[list[tuple[float, float]]]:
    bars = []
    for offset in (-0.66, 0.0, 0.66):
        x0, x1, y0, y1 = -1.0, 1.0, offset - 0.17, offset + 0.17
        rect = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        bars.append(rect if horizontal else [(y, x) for x, y in rect])
    return bars


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    radius: float,
    angle: float,
    colour: tuple[int, int, int],
) -> None:
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    elif shape == "ring":
        width = max(int(radius * 0.35), 1)
        draw.ellipse(
            [cx - radius, cy - radius, cx + radius, cy + radius], outline=colour, width=width
        )
    elif shape == "square":
        draw.polygon(
            _polygon(cx, cy, radius * 0.8, angle, [(-1, -1), (1, -1), (1, 1), (-1, 1)]), fill=colour
        )
    elif shape == "diamond":
        pts = [(0.0, -1.25), (0.75, 0.0), (0.0, 1.25), (-0.75, 0.0)]
        draw.polygon(_polygon(cx, cy, radius, angle, pts), fill=colour)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, radius * 1.1, angle, _regular(3)), fill=colour)
    elif shape == "hexagon":
        draw.polygon(_polygon(cx, cy, radius, angle, _regular(6)), fill=colour)
    elif shape == "star":
        outer = _regular(10)
        pts = [
            (x * (1.0 if k % 2 == 0 else 0.45), y * (1.0 if k % 2 == 0 else 0.45))
            for k, (x, y) in enumerate(outer)
        ]
        draw.polygon(_polygon(cx, cy, radius * 1.15, angle, pts), fill=colour)
    elif shape == "cross":
        arm = [(-1.0, -0.3), (1.0, -0.3), (1.0, 0.3), (-1.0, 0.3)]
        draw.polygon(_polygon(cx, cy, radius, angle, arm), fill=colour)
        draw.polygon(_polygon(cx, cy, radius, angle + math.pi / 2, arm), fill=colour)
    elif shape in ("h_stripes", "v_stripes"):
        for bar in _bars(horizontal=shape == "h_stripes"):
            draw.polygon(_polygon(cx, cy, radius, angle, bar), fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render_image(
    root: RootStyle,
    leaf: LeafStyle,
    rng: np.random.Generator,
    size: int,
    image_format: str = "JPEG",
) -> bytes:
    """Encode one product image (``image_format`` ``JPEG`` or ``PNG``) as bytes."""
    canvas = Image.fromarray(np.clip(_background(root, rng, size), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    cx = size / 2 + rng.uniform(-0.12, 0.12) * size
    cy = size / 2 + rng.uniform(-0.12, 0.12) * size
    radius = rng.uniform(0.22, 0.32) * size
    angle = math.radians(rng.uniform(-25, 25))
    colour = tuple(int(np.clip(c + rng.uniform(-22, 22), 0, 255)) for c in leaf.colour)
    _draw_shape(draw, leaf.shape, cx, cy, radius, angle, colour)
    pixels = np.asarray(canvas, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, 5.0, size=pixels.shape)
    out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    if image_format == "PNG":
        out.save(buf, format="PNG", optimize=False)
    else:
        out.save(buf, format="JPEG", quality=88)
    return buf.getvalue()
