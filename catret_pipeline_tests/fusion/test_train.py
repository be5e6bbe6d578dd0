"""Training on a separable synthetic set: category text vectors t_k, product features
A t_k + noise with A a fixed random linear map, so heads that learn to invert A retrieve even
categories they never saw in training. For the residual heads the product's middle DC columns
count as its "title" block (which here is not in the text space: the skip has to be learnt)."""

import dataclasses

import numpy as np
import pytest
import torch

from catret_pipeline.fusion.config import FusionTrainConfig
from catret_pipeline.fusion.features import MODEL_SPECS, PairData
from catret_pipeline.fusion.fingerprint import training_key
from catret_pipeline.fusion.heads import FusionHeads, ResidualFusionHeads, skip_basis
from catret_pipeline.fusion.jobs import TrainingJob
from catret_pipeline.fusion.objective import SplitTensors, batch_loss, eval_loss
from catret_pipeline.fusion.runner import run_jobs
from catret_pipeline.fusion.train import make_heads, train_heads

N_CATS, N_HELD_OUT, DC, DP = 50, 10, 16, 24
BLOCKS = {"image": 4, "title": DC, "attributes": DP - 4 - DC}


def _synthetic(seed: int = 0):
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(N_CATS, DC)).astype(np.float32)
    a = (rng.normal(size=(DC, DP)) / np.sqrt(DC)).astype(np.float32)

    def make(cats, per):
        cs = np.repeat(cats, per)
        x = text[cs] @ a + 0.5 * rng.normal(size=(len(cs), DP)).astype(np.float32)
        # Two-level tree: category k sits under root k % 5 (roots coded N_CATS..N_CATS+4).
        chain = np.stack([N_CATS + cs % 5, cs], axis=1).astype(np.int64)
        return PairData(
            asins=[f"p{i}" for i in range(len(cs))],
            products=x.astype(np.float32),
            categories=text[cs],
            category_codes=cs.astype(np.int64),
            depth=np.full(len(cs), 2, dtype=np.int64),
            chain=chain,
            block_dims=dict(BLOCKS),
        )

    seen = np.arange(N_CATS - N_HELD_OUT)
    unseen = np.arange(N_CATS - N_HELD_OUT, N_CATS)
    return (
        text,
        {
            "train": make(seen, 20),
            "val": make(seen, 5),
            "test_seen": make(seen, 5),
            "test_unseen": make(unseen, 5),
        },
        seen,
        unseen,
    )


CONFIG = FusionTrainConfig(min_steps=0, proj_dim=16, hidden_dims=(64, 64), epochs=30, device="cpu")


def _heads(result, name: str = "clip-ita", train: PairData | None = None) -> FusionHeads:
    if MODEL_SPECS[name].residual:
        heads = make_heads(train, MODEL_SPECS[name], CONFIG)
    else:
        heads = FusionHeads(DP, DC, CONFIG.proj_dim, CONFIG.hidden_dims, CONFIG.dropout)
    heads.load_state_dict(result.state_dict)
    return heads.eval()


def _retrieval(heads: FusionHeads, text, test: PairData, cats) -> tuple[float, float]:
    """(query P@1 over the test pool, product top-1 accuracy over the pool's categories)."""
    prods = heads.encode_products(torch.from_numpy(test.products)).numpy()
    queries = heads.encode_categories(torch.from_numpy(text[cats])).numpy()
    sims = queries @ prods.T
    p_at_1 = float(np.mean(test.category_codes[sims.argmax(axis=1)] == cats))
    accuracy = float(np.mean(cats[sims.argmax(axis=0)] == test.category_codes))
    return p_at_1, accuracy


@pytest.fixture(
    scope="module", params=["clip-ita", "clip-ita-masked", "clip-ita-tree", "clip-ita-res"]
)
def trained(request):
    text, data, seen, unseen = _synthetic()
    result = train_heads(data["train"], data["val"], MODEL_SPECS[request.param], CONFIG, 32)
    return request.param, text, data, seen, unseen, result


def test_retrieves_seen_and_held_out_categories(trained):
    name, text, data, seen, unseen, result = trained
    heads = _heads(result, name, data["train"])
    p1_seen, acc_seen = _retrieval(heads, text, data["test_seen"], seen)
    p1_unseen, acc_unseen = _retrieval(heads, text, data["test_unseen"], unseen)
    # Chance: P@1 1/40 seen, 1/10 held out.
    assert p1_seen > 0.8 and acc_seen > 0.8, (name, p1_seen, acc_seen)
    assert p1_unseen > 0.6 and acc_unseen > 0.6, (name, p1_unseen, acc_unseen)


def test_losses_fall(trained):
    _, _, _, _, _, result = trained
    train = [h["train_loss"] for h in result.history]
    val = [h["val_loss"] for h in result.history]
    assert result.epochs_run == 30 and result.stopped == "completed"
    assert train[-1] < train[0] - 0.1
    assert min(val) < result.val_loss_initial - 0.1
    assert val[-1] < val[0]
    assert result.best_epoch == int(np.argmin(val)) + 1
    assert result.weights_epoch == result.best_epoch


def test_untrained_heads_are_near_chance():
    text, data, seen, _ = _synthetic()
    torch.manual_seed(0)
    heads = FusionHeads(DP, DC, 16, (64, 64), 0.1).eval()
    p1, _ = _retrieval(heads, text, data["test_seen"], seen)
    assert p1 < 0.5  # so the trained result above is learnt, not structural


def test_deterministic_for_a_seed():
    _, data, _, _ = _synthetic()
    cfg = FusionTrainConfig(min_steps=0, proj_dim=8, hidden_dims=(16, 16), epochs=3, device="cpu")
    spec = MODEL_SPECS["clip-ita-masked"]
    torch.manual_seed(123)  # the caller's RNG state must not matter
    a = train_heads(data["train"], data["val"], spec, cfg, 16)
    torch.manual_seed(999)
    b = train_heads(data["train"], data["val"], spec, cfg, 16)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    c = train_heads(data["train"], data["val"], spec, dataclasses.replace(cfg, seed=1), 16)
    assert not all(torch.equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict)


def test_caller_rng_untouched():
    _, data, _, _ = _synthetic()
    cfg = FusionTrainConfig(min_steps=0, proj_dim=8, hidden_dims=(16, 16), epochs=1, device="cpu")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    train_heads(data["train"], None, MODEL_SPECS["clip-i"], cfg, 16)
    assert torch.equal(torch.rand(3), expected)


def test_time_budget_and_early_stopping_and_no_val():
    _, data, _, _ = _synthetic()
    base = dict(proj_dim=8, hidden_dims=(16, 16), epochs=5, device="cpu")
    spec = MODEL_SPECS["clip-i"]
    r = train_heads(
        data["train"],
        data["val"],
        spec,
        FusionTrainConfig(min_steps=0, **base, max_train_seconds=0.0),
        16,
    )
    assert r.epochs_run == 1 and r.stopped == "time_budget"
    # lr 0 never improves on epoch 1, so patience 2 stops after epoch 3.
    r = train_heads(
        data["train"],
        data["val"],
        spec,
        FusionTrainConfig(
            min_steps=0, **base, lr=0.0, weight_decay=0.0, dropout=0.0, early_stopping_patience=2
        ),
        16,
    )
    assert r.stopped == "early_stopping" and r.epochs_run == 3 and r.best_epoch == 1
    r = train_heads(data["train"], None, spec, FusionTrainConfig(min_steps=0, **base), 16)
    assert r.val_loss_initial is None and r.history[-1]["val_loss"] is None
    assert r.best_epoch == r.weights_epoch == 5


def test_rejects_degenerate_input():
    _, data, _, _ = _synthetic()
    cfg = FusionTrainConfig(min_steps=0, epochs=1, device="cpu")
    tiny = PairData(
        asins=["a"],
        products=data["train"].products[:1],
        categories=data["train"].categories[:1],
        category_codes=np.zeros(1, dtype=np.int64),
    )
    with pytest.raises(ValueError, match="at least 2"):
        train_heads(tiny, None, MODEL_SPECS["clip-i"], cfg, 8)
    with pytest.raises(ValueError, match="batch size"):
        train_heads(data["train"], None, MODEL_SPECS["clip-i"], cfg, 1)


def _with_relatives(data: PairData) -> PairData:
    """The same pairs, the first two relabelled to their root (an ancestor of the others)."""
    depth, chain = data.depth.copy(), data.chain.copy()
    depth[:2], chain[:2, 1] = 1, -1
    return dataclasses.replace(data, depth=depth, chain=chain)


def test_tree_model_without_relatives_shares_the_masked_run():
    _, data, _, _ = _synthetic()
    cfg = FusionTrainConfig(min_steps=0, proj_dim=8, hidden_dims=(16, 16), epochs=2, device="cpu")
    tr, va = data["train"], data["val"]
    masked, tree = MODEL_SPECS["clip-ita-masked"], MODEL_SPECS["clip-ita-tree"]
    # Every category is a depth-2 leaf: no ancestor/descendant pair, identity targets.
    assert training_key(tree, tr, va, 16, cfg) == training_key(masked, tr, va, 16, cfg)
    a = train_heads(tr, va, masked, cfg, 16)
    b = train_heads(tr, va, tree, cfg, 16)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
    related = _with_relatives(tr)
    assert training_key(tree, related, va, 16, cfg) != training_key(masked, related, va, 16, cfg)
    assert training_key(tree, tr, _with_relatives(va), 16, cfg) != training_key(
        masked, tr, va, 16, cfg
    )
    # Other config or data never share.
    assert training_key(masked, tr, va, 16, cfg) != training_key(masked, tr, va, 8, cfg)
    assert training_key(MODEL_SPECS["clip-ita"], tr, va, 16, cfg) != training_key(
        masked, tr, va, 16, cfg
    )


def test_one_pass_validation_loss_equals_per_batch_passes():
    _, data, _, _ = _synthetic()
    cfg = FusionTrainConfig(min_steps=0, proj_dim=8, hidden_dims=(16, 16), epochs=1, device="cpu")
    spec = MODEL_SPECS["clip-ita-tree"]
    val = _with_relatives(data["val"])
    torch.manual_seed(0)
    heads = FusionHeads(DP, DC, 8, (16, 16), 0.0)
    t = SplitTensors.of(val, torch.device("cpu"))
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        losses = [
            (float(batch_loss(heads, t, order[s : s + 8], spec, cfg)), len(order[s : s + 8]))
            for s in range(0, len(order), 8)
            if len(order[s : s + 8]) >= 2
        ]
    expected = sum(v * n for v, n in losses) / sum(n for _, n in losses)
    assert eval_loss(heads, t, order, 8, spec, cfg) == pytest.approx(expected, rel=1e-5)


def _job(spec, train, val, cfg, batch_size=16) -> TrainingJob:
    return TrainingJob(
        spec=spec,
        setting="all",
        train=train,
        val=val,
        batch_size=batch_size,
        config=cfg,
        fingerprint="",
        training_key=training_key(spec, train, val, batch_size, cfg),
        row={},
        meta_base={},
    )


def test_run_jobs_in_worker_processes_matches_in_process_and_shares_equal_runs():
    _, data, _, _ = _synthetic()
    cfg = FusionTrainConfig(min_steps=0, proj_dim=8, hidden_dims=(16, 16), epochs=2, device="cpu")
    jobs = [
        _job(MODEL_SPECS[m], data["train"], data["val"], cfg)
        for m in ("clip-i", "clip-ita-masked", "clip-ita-tree")
    ]
    seen = []
    serial = run_jobs(jobs, workers=1, on_done=lambda j, r, s: seen.append((j.spec.name, s)))
    assert sorted(seen) == [
        ("clip-i", None),
        ("clip-ita-masked", None),
        ("clip-ita-tree", "clip-ita-masked"),
    ]
    assert serial[2][0] is serial[1][0]
    parallel = run_jobs(jobs, workers=2)
    for i in range(3):
        a, b = serial[i][0].state_dict, parallel[i][0].state_dict
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert parallel[i][1] == serial[i][1]


def _text_space_pairs(seed: int = 0, n_cats: int = 12, per: int = 3, dim: int = DC) -> PairData:
    """Products whose title block lives in the category text space (one shared encoder)."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n_cats, dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    cs = np.repeat(np.arange(n_cats), per)
    title = text[cs] + 0.8 * rng.normal(size=(len(cs), dim)).astype(np.float32)
    title /= np.linalg.norm(title, axis=1, keepdims=True)
    image = rng.normal(size=(len(cs), 4)).astype(np.float32)
    attrs = rng.normal(size=(len(cs), 5)).astype(np.float32)
    return PairData(
        asins=[f"p{i}" for i in range(len(cs))],
        products=np.concatenate([image, title, attrs], axis=1),
        categories=text[cs],
        category_codes=cs.astype(np.int64),
        block_dims={"image": 4, "title": dim, "attributes": 5},
    )


def _scores(heads: FusionHeads, data: PairData, names: np.ndarray) -> np.ndarray:
    heads.eval()
    p = heads.encode_products(torch.from_numpy(data.products)).numpy()
    q = heads.encode_categories(torch.from_numpy(names)).numpy()
    return q @ p.T


@pytest.mark.parametrize("proj_dim", [DC, DC + 8])
def test_untrained_residual_heads_score_the_title_name_cosine(proj_dim):
    data = _text_space_pairs()
    names = np.unique(data.categories, axis=0)
    title = data.products[:, 4 : 4 + DC]
    baseline = names @ title.T  # unit vectors: the zero-shot cosine (the MPNet baseline)
    cfg = dataclasses.replace(CONFIG, proj_dim=proj_dim)
    torch.manual_seed(0)
    heads = make_heads(data, MODEL_SPECS["clip-ita-res"], cfg)
    assert isinstance(heads, ResidualFusionHeads)
    scores = _scores(heads, data, names)
    np.testing.assert_allclose(scores, baseline, atol=1e-5)
    assert (np.argsort(-scores, axis=1) == np.argsort(-baseline, axis=1)).all()
    # Not structural: the paper's heads at the same init do not score the cosine.
    torch.manual_seed(0)
    plain = make_heads(data, MODEL_SPECS["clip-ita-masked"], cfg)
    assert not np.allclose(_scores(plain, data, names), baseline, atol=1e-2)


def test_pca_skip_keeps_the_cosine_when_projecting_down():
    # Text vectors in an 8-d subspace of 16-d: the top-8 singular directions lose nothing.
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.normal(size=(DC, 8)))[0].T.astype(np.float32)
    data = _text_space_pairs(dim=8)
    data = dataclasses.replace(
        data,
        products=np.concatenate(
            [data.products[:, :4], data.products[:, 4:12] @ basis, data.products[:, 12:]], axis=1
        ),
        categories=data.categories @ basis,
        block_dims={"image": 4, "title": DC, "attributes": 5},
    )
    names = np.unique(data.categories, axis=0)
    baseline = names @ data.products[:, 4 : 4 + DC].T
    cfg = dataclasses.replace(CONFIG, proj_dim=8)
    torch.manual_seed(0)
    scores = _scores(make_heads(data, MODEL_SPECS["clip-ita-res"], cfg), data, names)
    np.testing.assert_allclose(scores, baseline, atol=1e-4)
    a = skip_basis(torch.from_numpy(data.categories), 8, "random", seed=1)
    assert torch.allclose(a @ a.T, torch.eye(8), atol=1e-5)  # orthonormal rows
    with pytest.raises(ValueError, match="skip init"):
        skip_basis(torch.from_numpy(data.categories), 8, "nope")


def test_residual_options_anchor_and_frozen_skip():
    data = _text_space_pairs()
    spec = MODEL_SPECS["clip-ita-res"]
    base = dataclasses.replace(CONFIG, epochs=3, lr=1e-2)
    free = train_heads(data, None, spec, base, 12).state_dict
    frozen = train_heads(
        data, None, spec, dataclasses.replace(base, res_skip_lr_scale=0.0), 12
    ).state_dict
    anchored = train_heads(
        data, None, spec, dataclasses.replace(base, res_anchor=10.0), 12
    ).state_dict
    assert torch.equal(frozen["skip"], frozen["a_init"])
    moved = (free["skip"] - free["a_init"]).norm()
    assert moved > 0
    assert (anchored["skip"] - anchored["a_init"]).norm() < moved
    # The residual model never shares the masked model's run.
    assert training_key(spec, data, data, 12, base) != training_key(
        MODEL_SPECS["clip-ita-masked"], data, data, 12, base
    )
