import math

import numpy as np
import pytest
import torch

from catret_pipeline.fusion.features import ancestor_table
from catret_pipeline.fusion.loss import (
    bidirectional_info_nce,
    bidirectional_info_nce_terms,
    same_category_exclusion,
    similarity_logits,
    tree_soft_targets,
)


def test_hand_checked_two_orthogonal_pairs():
    # cos = identity: each row's softmax puts e^1 on the positive and e^0 on the other.
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = math.log(1 + math.exp(-1))
    assert bidirectional_info_nce(p, p.clone()).item() == pytest.approx(expected, abs=1e-6)
    # tau scales the logits: with tau = 0.5 the positive gets e^2.
    assert bidirectional_info_nce(p, p.clone(), tau=0.5).item() == pytest.approx(
        math.log(1 + math.exp(-2)), abs=1e-6
    )


def test_cosine_ignores_scale():
    p = torch.tensor([[3.0, 0.0], [0.0, 0.1]])
    c = torch.tensor([[0.5, 0.0], [0.0, 7.0]])
    assert torch.allclose(similarity_logits(p, c), torch.eye(2))


def test_lambda_weights_the_two_directions():
    # Asymmetric case: three products, three categories, hand-computed per direction.
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    s = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # cos(p_j, c_k)
    p2c_hand = [-(s[j, j] - torch.logsumexp(s[j], 0)).item() for j in range(3)]
    c2p_hand = [-(s[j, j] - torch.logsumexp(s[:, j], 0)).item() for j in range(3)]
    p2c, c2p = bidirectional_info_nce_terms(p, c)
    assert p2c.tolist() == pytest.approx(p2c_hand, abs=1e-6)
    assert c2p.tolist() == pytest.approx(c2p_hand, abs=1e-6)
    assert p2c_hand != pytest.approx(c2p_hand)
    for lam in (0.0, 0.3, 1.0):
        want = np.mean([lam * a + (1 - lam) * b for a, b in zip(p2c_hand, c2p_hand, strict=True)])
        assert bidirectional_info_nce(p, c, lam=lam).item() == pytest.approx(want, abs=1e-6)


def test_masked_equals_unmasked_when_categories_distinct():
    g = torch.Generator().manual_seed(0)
    p, c = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    exclude = same_category_exclusion(torch.arange(6))
    assert not exclude.any()
    assert bidirectional_info_nce(p, c, exclude=exclude).item() == pytest.approx(
        bidirectional_info_nce(p, c).item(), abs=1e-7
    )


def test_masked_drops_same_category_columns():
    g = torch.Generator().manual_seed(1)
    p, c = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    codes = torch.tensor([7, 7, 2, 5])  # pairs 0 and 1 share a category
    exclude = same_category_exclusion(codes)
    assert exclude.tolist() == [
        [False, True, False, False],
        [True, False, False, False],
        [False, False, False, False],
        [False, False, False, False],
    ]
    p2c, c2p = bidirectional_info_nce_terms(p, c, exclude=exclude)
    s = similarity_logits(p, c)
    # Row 0 competes only against columns {0, 2, 3}; rows 2 and 3 are untouched.
    assert p2c[0].item() == pytest.approx(
        -(s[0, 0] - torch.logsumexp(s[0, [0, 2, 3]], 0)).item(), abs=1e-6
    )
    assert c2p[1].item() == pytest.approx(
        -(s[1, 1] - torch.logsumexp(s[[1, 2, 3], 1], 0)).item(), abs=1e-6
    )
    full_p2c, _ = bidirectional_info_nce_terms(p, c)
    assert p2c[2:].tolist() == pytest.approx(full_p2c[2:].tolist(), abs=1e-6)
    # Moving the excluded category vector changes nothing in row 0 of p->c.
    c_moved = c.clone()
    c_moved[1] = torch.tensor([100.0, -3.0, 2.0])
    p2c_moved, _ = bidirectional_info_nce_terms(p, c_moved, exclude=exclude)
    assert p2c_moved[0].item() == pytest.approx(p2c[0].item(), abs=1e-6)


def test_masked_loss_is_finite_and_differentiable_when_whole_batch_shares_a_category():
    p = torch.randn(4, 3, requires_grad=True)
    c = torch.randn(4, 3, requires_grad=True)
    loss = bidirectional_info_nce(p, c, exclude=same_category_exclusion(torch.zeros(4)))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # only the positive is left
    loss.backward()
    assert torch.isfinite(p.grad).all() and torch.isfinite(c.grad).all()


def test_identity_soft_targets_equal_hard_targets():
    g = torch.Generator().manual_seed(2)
    p, c = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    assert bidirectional_info_nce(p, c, soft_targets=torch.eye(5)).item() == pytest.approx(
        bidirectional_info_nce(p, c).item(), abs=1e-6
    )


def test_soft_targets_weight_partial_positives():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = p.clone()
    targets = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    s = similarity_logits(p, c)
    row = -(2 / 3 * torch.log_softmax(s[0], 0)[0] + 1 / 3 * torch.log_softmax(s[0], 0)[1])
    assert bidirectional_info_nce(p, c, soft_targets=targets).item() == pytest.approx(
        row.item(), abs=1e-6
    )
    with pytest.raises(ValueError):
        bidirectional_info_nce(p, c, soft_targets=torch.zeros(2, 2))


def test_bad_arguments_raise():
    p = torch.randn(3, 2)
    with pytest.raises(ValueError, match="batch sizes"):
        bidirectional_info_nce(p, torch.randn(2, 2))
    with pytest.raises(ValueError, match="tau"):
        bidirectional_info_nce(p, p, tau=0.0)
    with pytest.raises(ValueError, match="lambda"):
        bidirectional_info_nce(p, p, lam=1.5)


def test_tree_soft_targets_from_tree():
    import polars as pl

    # root R -> A -> A1, root R -> B; root S.
    tree = pl.DataFrame(
        {
            "node_id": ["R", "A", "A1", "B", "S"],
            "parent_id": [None, "R", "A", "R", None],
            "depth": [1, 2, 3, 2, 1],
        }
    )
    depth, chain = ancestor_table(tree, ["A1", "R", "A", "B", "S", "A1"])
    assert depth.tolist() == [3, 1, 2, 2, 1, 3]
    t = tree_soft_targets(
        torch.from_numpy(depth), torch.from_numpy(chain), weight=0.5, decay=0.5
    ).numpy()
    assert np.allclose(t, t.T)
    assert np.allclose(np.diag(t), 1.0)
    assert t[0, 2] == pytest.approx(0.5)  # A1 child of A
    assert t[0, 1] == pytest.approx(0.25)  # A1 grandchild of R: one more level, decayed
    assert t[1, 3] == pytest.approx(0.5)  # B child of R
    assert t[2, 3] == 0.0  # siblings A and B are not related
    assert t[0, 3] == 0.0 and t[0, 4] == 0.0 and t[1, 4] == 0.0
    assert t[0, 5] == 0.0  # the same node twice is left to the same-category mask


def test_ancestor_table_rejects_unknown_ids():
    import polars as pl

    tree = pl.DataFrame({"node_id": ["R"], "parent_id": [None], "depth": [1]})
    with pytest.raises(ValueError, match="not in category_tree"):
        ancestor_table(tree, ["X"])
