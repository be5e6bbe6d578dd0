"""Projection heads of CLIP-ITA and its ablations (paper, "Models"), and our residual heads.

Both heads are non-linear MLPs with two hidden layers, GELU and LayerNorm:
``Linear -> LayerNorm -> GELU -> Dropout`` per hidden layer, then a ``Linear`` to the
projection size. ``g_c`` maps a category-name text vector, ``g_p`` the concatenation of a
product's per-modality vectors; both land in one space compared by cosine similarity.

:class:`ResidualFusionHeads` (``clip-ita-res``, ours) adds a linear skip ``A`` shared by the
category vector and the product's title block, and zero-initialises the MLPs' last layers and
the other blocks' skip, so the untrained model scores ``cos(A t, A c)``: with ``A`` the
identity (or an orthonormal projection onto the text vectors' main subspace) that is the
zero-shot title-vs-name cosine of the shared text encoder. Training moves away from it only
where the data says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class ProjectionHead(nn.Module):
    def __init__(
        self,
        in_dim: int,
        out_dim: int = 256,
        hidden_dims: Sequence[int] = (512, 512),
        dropout: float = 0.1,
        zero_last: bool = False,
    ) -> None:
        super().__init__()
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"head dims must be positive (in={in_dim}, out={out_dim})")
        layers: list[nn.Module] = []
        dim = in_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            dim = hidden
        last = nn.Linear(dim, out_dim)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FusionHeads(nn.Module):
    """``g_p`` (product) and ``g_c`` (category); encoders stay frozen outside this module."""

    def __init__(
        self,
        product_in_dim: int,
        category_in_dim: int,
        proj_dim: int = 256,
        hidden_dims: Sequence[int] = (512, 512),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.g_p = ProjectionHead(product_in_dim, proj_dim, hidden_dims, dropout)
        self.g_c = ProjectionHead(category_in_dim, proj_dim, hidden_dims, dropout)

    def forward(
        self, products: torch.Tensor, categories: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.g_p(products), self.g_c(categories)

    @torch.no_grad()
    def encode_products(self, x: torch.Tensor) -> torch.Tensor:
        """Unit vectors, so inner product equals the cosine the loss trained."""
        return F.normalize(self.g_p(x), dim=-1)

    @torch.no_grad()
    def encode_categories(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.g_c(x), dim=-1)


def skip_basis(
    text_vectors: torch.Tensor, proj_dim: int, init: str = "pca", seed: int = 0
) -> torch.Tensor:
    """Initial ``A`` (proj_dim, text_dim) with orthonormal rows.

    ``proj_dim >= text_dim``: the identity (zero rows below), so ``cos(A t, A c) = cos(t, c)``
    exactly. Otherwise ``pca``: the top right singular vectors of ``text_vectors`` (uncentred,
    so the directions carrying most of the vectors' energy; the cosine is nearly preserved), or
    ``random``: a seeded random orthonormal projection.
    """
    text_dim = int(text_vectors.shape[1])
    if proj_dim >= text_dim:
        return torch.eye(proj_dim, text_dim)
    if init == "pca" and text_vectors.shape[0] >= proj_dim:
        _, _, vh = torch.linalg.svd(text_vectors.double(), full_matrices=False)
        return vh[:proj_dim].float().contiguous()
    if init not in ("pca", "random"):
        raise ValueError(f"unknown skip init {init!r}; known: pca, random")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(text_dim, proj_dim, generator=g, dtype=torch.float64))
    return q.T.float().contiguous()


class ResidualFusionHeads(FusionHeads):
    """``g_p(x) = A x_title + B x + MLP_p(x)``, ``g_c(c) = A c + MLP_c(c)`` (ours).

    ``A`` starts at ``skip_init`` (kept as the buffer ``a_init`` for the anchor penalty),
    ``B`` and both MLPs' last layers at zero.
    """

    def __init__(
        self,
        product_in_dim: int,
        category_in_dim: int,
        text_slice: tuple[int, int],
        proj_dim: int = 256,
        hidden_dims: Sequence[int] = (512, 512),
        dropout: float = 0.1,
        skip_init: torch.Tensor | None = None,
    ) -> None:
        nn.Module.__init__(self)
        start, stop = text_slice
        if not 0 <= start < stop <= product_in_dim or stop - start != category_in_dim:
            raise ValueError(
                f"title block {text_slice} must lie in the product input (width "
                f"{product_in_dim}) and match the category width {category_in_dim}"
            )
        self.text_slice = (int(start), int(stop))
        self.g_p = ProjectionHead(product_in_dim, proj_dim, hidden_dims, dropout, zero_last=True)
        self.g_c = ProjectionHead(category_in_dim, proj_dim, hidden_dims, dropout, zero_last=True)
        if skip_init is None:
            skip_init = torch.eye(proj_dim, category_in_dim)
        if tuple(skip_init.shape) != (proj_dim, category_in_dim):
            raise ValueError(
                f"skip_init has shape {tuple(skip_init.shape)}, "
                f"expected {(proj_dim, category_in_dim)}"
            )
        self.skip = nn.Parameter(skip_init.detach().clone().float())
        self.register_buffer("a_init", skip_init.detach().clone().float())
        self.other_skip = nn.Linear(product_in_dim, proj_dim, bias=False)
        nn.init.zeros_(self.other_skip.weight)

    def _p(self, x: torch.Tensor) -> torch.Tensor:
        start, stop = self.text_slice
        return x[:, start:stop] @ self.skip.T + self.other_skip(x) + self.g_p(x)

    def _c(self, c: torch.Tensor) -> torch.Tensor:
        return c @ self.skip.T + self.g_c(c)

    def forward(
        self, products: torch.Tensor, categories: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._p(products), self._c(categories)

    def anchor_penalty(self) -> torch.Tensor:
        """``||A - A_init||_F^2``: how far the shared skip moved from the text encoder's space."""
        return (self.skip - self.a_init).pow(2).sum()

    @torch.no_grad()
    def encode_products(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self._p(x), dim=-1)

    @torch.no_grad()
    def encode_categories(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self._c(x), dim=-1)


def text_block_slice(
    modalities: Sequence[str], modality_dims: dict[str, int], text: str = "title"
) -> tuple[int, int]:
    """Columns of the ``text`` block in the concatenated product input."""
    if text not in modalities:
        raise ValueError(f"residual heads need the {text!r} block; the model has {modalities}")
    start = 0
    for m in modalities:
        if m == text:
            return start, start + int(modality_dims[m])
        start += int(modality_dims[m])
    raise AssertionError("unreachable")


def build_heads(
    *,
    residual: bool,
    product_in_dim: int,
    category_in_dim: int,
    proj_dim: int,
    hidden_dims: Sequence[int],
    dropout: float,
    modalities: Sequence[str] = (),
    modality_dims: dict[str, int] | None = None,
    skip_init: torch.Tensor | None = None,
) -> FusionHeads:
    """The heads a model spec trains: plain MLPs, or the residual heads of ``clip-ita-res``."""
    if not residual:
        return FusionHeads(product_in_dim, category_in_dim, proj_dim, hidden_dims, dropout)
    return ResidualFusionHeads(
        product_in_dim,
        category_in_dim,
        text_block_slice(modalities, modality_dims or {}),
        proj_dim,
        hidden_dims,
        dropout,
        skip_init,
    )
