"""Bidirectional InfoNCE (ConVIRT) with in-batch negatives, plus our two variants.

Paper: ``L = mean_j [lambda * l(p_j -> c_j) + (1 - lambda) * l(c_j -> p_j)]`` with
``l(p_j -> c_j) = -log softmax_k(sim(p_j, c_k) / tau)_j`` (and symmetrically over products),
``sim`` the cosine, ``tau = 1``, ``lambda = 0.5``.

Variants (ours):

- ``exclude``: a boolean (B, B) matrix of in-batch pairs that are neither positive nor negative
  (pairs sharing the positive's category name, the diagonal never excluded). Their logits are
  set to ``-inf`` in both directions, so they drop out of the softmax denominators.
- ``soft_targets``: a non-negative (B, B) matrix of target weights (diagonal > 0), row-normalised
  here, for partial positives (tree-aware targets). Row ``j`` is the target over categories for
  product ``j`` and, by symmetry of the relation, over products for category ``j``; the
  ``c -> p`` direction uses its transpose.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def similarity_logits(p: torch.Tensor, c: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """``logits[j, k] = cos(p_j, c_k) / tau``."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    return F.normalize(p, dim=-1) @ F.normalize(c, dim=-1).T / tau


def _directional(
    logits: torch.Tensor, exclude: torch.Tensor | None, targets: torch.Tensor | None
) -> torch.Tensor:
    """Per-row cross-entropy of ``logits`` against the diagonal (or soft ``targets``)."""
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    log_prob = F.log_softmax(logits, dim=1)
    if targets is None:
        return -log_prob.diagonal()
    if exclude is not None:
        # 0 * -inf would be nan: excluded cells carry no target weight anyway.
        log_prob = log_prob.masked_fill(exclude, 0.0)
    return -(targets * log_prob).sum(dim=1)


def _row_normalise(w: torch.Tensor | None) -> torch.Tensor | None:
    return None if w is None else w / w.sum(dim=1, keepdim=True)


def bidirectional_info_nce_terms(
    p: torch.Tensor,
    c: torch.Tensor,
    *,
    tau: float = 1.0,
    exclude: torch.Tensor | None = None,
    soft_targets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair losses ``(l(p_j -> c_j), l(c_j -> p_j))``, each of shape (B,)."""
    if p.shape[0] != c.shape[0]:
        raise ValueError(f"batch sizes differ: {p.shape[0]} products vs {c.shape[0]} categories")
    n = p.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=p.device)
    if exclude is not None:
        exclude = exclude.to(device=p.device, dtype=torch.bool) & ~eye
    raw = None
    if soft_targets is not None:
        raw = soft_targets.to(device=p.device, dtype=p.dtype)
        if (raw < 0).any() or (raw.diagonal() <= 0).any():
            raise ValueError("soft targets must be non-negative with a positive diagonal")
        if exclude is not None:
            raw = raw.masked_fill(exclude, 0.0)
    logits = similarity_logits(p, c, tau)
    p2c = _directional(logits, exclude, _row_normalise(raw))
    c2p = _directional(
        logits.T,
        exclude.T if exclude is not None else None,
        _row_normalise(raw.T) if raw is not None else None,
    )
    return p2c, c2p


def bidirectional_info_nce(
    p: torch.Tensor,
    c: torch.Tensor,
    *,
    tau: float = 1.0,
    lam: float = 0.5,
    exclude: torch.Tensor | None = None,
    soft_targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """The batch loss: mean over pairs of ``lam * l(p->c) + (1 - lam) * l(c->p)``."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1], got {lam}")
    p2c, c2p = bidirectional_info_nce_terms(
        p, c, tau=tau, exclude=exclude, soft_targets=soft_targets
    )
    return (lam * p2c + (1.0 - lam) * c2p).mean()


def same_category_exclusion(category_codes: torch.Tensor) -> torch.Tensor:
    """(B, B) True where two in-batch pairs share a category, off the diagonal."""
    same = category_codes[:, None] == category_codes[None, :]
    return same & ~torch.eye(len(category_codes), dtype=torch.bool, device=category_codes.device)


def tree_soft_targets(
    depth: torch.Tensor,
    chain: torch.Tensor,
    *,
    weight: float = 0.5,
    decay: float = 0.5,
) -> torch.Tensor:
    """Target weights from the category tree: 1 on the diagonal, partial for relatives.

    ``depth`` (B,) and ``chain`` (B, L) come from :func:`features.ancestor_table` for the
    batch's categories. Pair (j, k) gets ``weight * decay ** (|depth_j - depth_k| - 1)`` when
    one category is a proper ancestor of the other, 0 otherwise (including same-depth
    relatives and exact duplicates, which the caller masks). The matrix is symmetric.
    """
    n = depth.shape[0]
    # anc_at[j, k] = j's ancestor at k's depth (or -1 if k is deeper than j).
    idx = (depth - 1).clamp_min(0).unsqueeze(0).expand(n, n)
    anc_at = chain.gather(1, idx)
    own = chain.gather(1, (depth - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
    k_is_ancestor_of_j = (anc_at == own.unsqueeze(0)) & (depth.unsqueeze(0) < depth.unsqueeze(1))
    related = k_is_ancestor_of_j | k_is_ancestor_of_j.T
    gap = (depth.unsqueeze(0) - depth.unsqueeze(1)).abs().clamp_min(1).to(torch.float32)
    soft = weight * decay ** (gap - 1)
    targets = torch.where(related, soft, torch.zeros_like(soft))
    targets.fill_diagonal_(1.0)
    return targets
