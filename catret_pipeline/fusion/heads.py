"""Projection heads of CLIP-ITA and its ablations (paper, "Models").

Both heads are non-linear MLPs with two hidden layers, GELU and LayerNorm:
``Linear -> LayerNorm -> GELU -> Dropout`` per hidden layer, then a ``Linear`` to the
projection size. ``g_c`` maps a category-name text vector, ``g_p`` the concatenation of a
product's per-modality vectors; both land in one space compared by cosine similarity.
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
        layers.append(nn.Linear(dim, out_dim))
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
