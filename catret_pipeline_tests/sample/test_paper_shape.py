"""The paper-shaped sample (issue #15 item 1): a procedural tree of >= 5,000 categories on 9
levels with the paper's mean path depth, ~6 attributes per product, and the default sample
left byte for byte as it was."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections import Counter
from pathlib import Path

import pytest

from catret_pipeline import cli
from catret_pipeline import config as catret_config
from catret_pipeline.cli.environment import ensure_bundled_sample, flag_values
from catret_pipeline.cli.main import build_parser
from catret_pipeline.ingest.cleaning import extract_attributes
from catret_pipeline.sample import (
    MANIFEST_NAME,
    ensure_sample,
    generate_sample,
    normalise_params,
    tree_leaves,
)
from catret_pipeline.sample.leaves import paper_leaves
from catret_pipeline.sample.manifest import SAMPLE_SHAPES
from catret_pipeline.sample.paper_tree import MAX_DEPTH, build_paper_tree, tree_stats

PAPER = {"n_products": 3000, "image_size": 8, "markets": ("us",), "shape": "paper"}


@pytest.fixture(scope="module")
def paper_tree():
    return build_paper_tree(0)


@pytest.fixture(scope="module")
def paper_sample(tmp_path_factory: pytest.TempPathFactory):
    return generate_sample(tmp_path_factory.mktemp("paper") / "s", **PAPER)


def _records(root: Path) -> dict[str, dict]:
    """First valid JSON record per asin over every metadata file (sorted order)."""
    out: dict[str, dict] = {}
    for path in sorted(root.rglob("*.json.gz")):
        # The cut-off Office file: decode what the stream holds.
        data = zlib.decompressobj(31).decompress(path.read_bytes())
        for raw in data.split(b"\n"):
            try:
                rec = json.loads(raw.decode("utf-8"))
            except ValueError:
                continue
            if (
                isinstance(rec, dict)
                and isinstance(rec.get("asin"), str)
                and isinstance(rec.get("title"), str)
                and isinstance(rec.get("categories"), list)
            ):
                out.setdefault(rec["asin"], rec)
    return out


# --------------------------------------------------------------------------- the tree


def test_tree_has_the_papers_shape(paper_tree) -> None:
    stats = tree_stats([leaf.path for leaf in paper_tree])
    assert stats["n_categories"] >= 5000
    assert stats["max_depth"] == MAX_DEPTH == 9
    assert sorted(stats["nodes_by_depth"]) == list(range(1, 10))
    assert stats["nodes_by_depth"][1] == 5  # the vocabulary's roots
    # One path per leaf: products spread over leaves at random ranks, so this is their mean.
    assert 4.0 <= stats["mean_path_depth"] <= 5.2
    assert stats["n_leaves"] == len(paper_tree) == len({leaf.path for leaf in paper_tree})


def test_tree_is_deterministic_per_seed(paper_tree) -> None:
    assert build_paper_tree(0) == paper_tree
    other = build_paper_tree(1)
    assert [leaf.path for leaf in other] != [leaf.path for leaf in paper_tree]
    assert tree_stats([leaf.path for leaf in other])["n_categories"] >= 5000


def test_names_are_readable_and_siblings_distinct(paper_tree) -> None:
    children: dict[tuple[str, ...], list[str]] = {}
    nodes = {leaf.path[:d] for leaf in paper_tree for d in range(1, len(leaf.path) + 1)}
    for node in nodes:
        children.setdefault(node[:-1], []).append(node[-1])
    for parent, names in children.items():
        assert len(names) == len(set(names)), f"repeated child name under {parent}"
    vocab = tree_leaves()
    for node in nodes:
        name = node[-1]
        assert name and name == name.strip() and "  " not in name, repr(name)
        words = [w.lower() for w in name.split()]
        assert len(words) == len(set(words)), f"word repeated in {name!r}"
        assert len(name) <= 80, name
    for leaf in paper_tree:
        base = vocab[leaf.base_index]
        # The base's path stays the prefix up to its parent; the leaf name ends in its name.
        assert leaf.path[: len(base.path) - 1] == base.path[:-1]
        assert leaf.path[-1].endswith(base.path[-1])
        assert leaf.nouns and all(n.strip() for n in leaf.nouns)
    # Names are mostly distinct over the whole tree (repeats only under different parents).
    assert len({node[-1] for node in nodes}) >= 0.5 * len(nodes)


def test_paper_leaves_keep_the_vocabulary_styles() -> None:
    leaves = paper_leaves(0)
    assert [leaf.index for leaf in leaves] == list(range(len(leaves)))
    assert {leaf.style_key for leaf in leaves} == {leaf.index for leaf in tree_leaves()}


# --------------------------------------------------------------------------- a generated sample


def test_paper_sample_through_the_generator(paper_sample) -> None:
    assert paper_sample.n_products == PAPER["n_products"]
    assert paper_sample.params["shape"] == "paper"
    manifest = json.loads((paper_sample.out_dir / MANIFEST_NAME).read_text())
    assert manifest["params"]["shape"] == "paper"
    records = _records(paper_sample.xmarket_dir)
    assert len(records) >= PAPER["n_products"] - 1  # the python-literal line is not JSON
    paths = [tuple(r["categories"]) for r in records.values()]
    stats = tree_stats(paths)
    assert stats["n_categories"] == pytest.approx(paper_sample.n_categories, abs=5)
    assert stats["n_categories"] > 1500  # 3,000 products reach far past the 142-node tree
    assert stats["max_depth"] >= 8
    assert 4.0 <= stats["mean_path_depth"] <= 5.2
    # Zipf-like: a few big leaves, most tiny.
    sizes = sorted(Counter(paths).values(), reverse=True)
    assert sizes[0] >= 10 * sizes[len(sizes) // 2]
    # ~6 attribute strings per product, as the pipeline counts them (paper: 5.87).
    fields = ("features", "productDetails")
    n_attrs = [len(extract_attributes(r, fields)) for r in records.values()]
    assert 5.0 <= sum(n_attrs) / len(n_attrs) <= 7.0
    # Titles name the procedural leaf's qualifiers often enough to carry signal.
    hits = sum(
        1
        for r in records.values()
        if set(r["categories"][-1].lower().split()) & set(r["title"].lower().split())
    )
    assert hits >= 0.6 * len(records)
    # Every readable imgUrl has its mirror image.
    names = {p.name for p in paper_sample.images_dir.iterdir()}
    for r in records.values():
        urls = json.loads(r["imgUrl"])
        assert not urls or any(u.rsplit("/", 1)[1] in names for u in urls)


def test_paper_sample_is_deterministic(tmp_path: Path) -> None:
    small = {**PAPER, "n_products": 200}
    a = generate_sample(tmp_path / "a", **small)
    b = generate_sample(tmp_path / "b", **small)
    c = generate_sample(tmp_path / "c", **small, seed=1)
    rel = "us/Electronics/metadata_us_Electronics.json.gz"
    assert (a.xmarket_dir / rel).read_bytes() == (b.xmarket_dir / rel).read_bytes()
    assert (a.xmarket_dir / rel).read_bytes() != (c.xmarket_dir / rel).read_bytes()


# --------------------------------------------------------------------------- the default


def _content_digest(out: Path) -> str:
    """sha256 of the sample's content: decompressed metadata, manifest, image names.

    Decompressed and without image bytes, so a different zlib or JPEG encoder build does not
    change it; only the generator's draws do.
    """
    h = hashlib.sha256()
    for path in sorted((out / "xmarket").rglob("*.json.gz")):
        h.update(path.relative_to(out).as_posix().encode() + b"\0")
        h.update(zlib.decompressobj(31).decompress(path.read_bytes()))
    for name in (MANIFEST_NAME, "broken_lines.json"):
        h.update((out / name).read_bytes())
    h.update("\n".join(sorted(p.name for p in (out / "images").iterdir())).encode())
    return h.hexdigest()


#: Content digests of default-shape samples, computed on main before the shape knob existed.
#: A change here means the default sample changed: bump GENERATOR_VERSION and update them.
DEFAULT_DIGESTS = {
    "default": "e1da12f03aecec3aa3f7c80eb62165fef0a5def7561d57ef16c22492f74a2670",
    "small": "86335b1d65200ed486a0e5568b0dda5c0628f0f7e32c7a5052a5316870a59d74",
}


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("default", {"image_size": 8}),
        ("small", {"n_products": 300, "seed": 3, "markets": ("us",), "image_size": 16}),
    ],
)
def test_default_shape_output_is_unchanged(tmp_path: Path, name: str, kwargs: dict) -> None:
    summary = generate_sample(tmp_path / "s", **kwargs)
    assert "shape" not in summary.params
    assert _content_digest(summary.out_dir) == DEFAULT_DIGESTS[name]
    explicit = generate_sample(tmp_path / "e", shape="sample", **kwargs)
    assert _content_digest(explicit.out_dir) == DEFAULT_DIGESTS[name]


def test_ensure_sample_tells_the_shapes_apart(tmp_path: Path) -> None:
    out = tmp_path / "sample"
    small = {"n_products": 120, "image_size": 8, "markets": ("us",)}
    default = ensure_sample(out, **small)
    assert ensure_sample(out, shape="sample", **small) == default  # same params, no regeneration
    paper = ensure_sample(out, shape="paper", **small)
    assert paper.params["shape"] == "paper" and paper.n_categories != default.n_categories
    assert json.loads((out / MANIFEST_NAME).read_text())["params"]["shape"] == "paper"
    assert "shape" not in ensure_sample(out, **small).params


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("shape", ["Paper", "", "xmarket", None, 1])
def test_bad_shape_is_rejected(shape) -> None:
    with pytest.raises(ValueError, match=r"shape must be one of \['sample', 'paper'\]"):
        normalise_params(shape=shape)


def test_settings_and_generator_agree_on_the_shapes() -> None:
    assert catret_config.SAMPLE_SHAPES == SAMPLE_SHAPES


def test_bad_shape_env_is_one_line_before_the_sample_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # The CLI writes these into os.environ: set-then-delete makes monkeypatch restore them.
    names = (
        catret_config.ENV_DATA_DIR,
        catret_config.ENV_RAW_ROOT,
        catret_config.ENV_PROFILE,
        "DAGSTER_HOME",
    )
    for name in (*names, "HF_HUB_OFFLINE", "DAGSTER_DISABLE_TELEMETRY"):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    monkeypatch.setenv(catret_config.ENV_SAMPLE_SHAPE, "papr")
    data = tmp_path / "data"
    assert cli.main(["materialize", "--data-dir", str(data), "--sample-products", "60"]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert lines == [
        "catret: configuration error: CATRET_SAMPLE_SHAPE='papr': expected one of "
        "['sample', 'paper']"
    ]
    assert not data.exists()


def test_bad_shape_flag_is_refused_by_the_parser(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["materialize", "--sample-shape", "papr"])
    assert exc.value.code == 2
    assert "invalid choice: 'papr'" in capsys.readouterr().err


def test_shape_flag_sets_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(catret_config.ENV_SAMPLE_SHAPE, "x")
    monkeypatch.delenv(catret_config.ENV_SAMPLE_SHAPE)
    base = catret_config.CatretConfig.from_env()
    values = flag_values(build_parser().parse_args(["materialize"]))
    assert values[catret_config.ENV_SAMPLE_SHAPE] is None
    assert base.overridden(values).sample_shape == "sample"
    values = flag_values(build_parser().parse_args(["ui", "--sample-shape", "paper"]))
    assert base.overridden(values).sample_shape == "paper"


def test_cli_passes_the_shape_to_the_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(catret_config.ENV_SAMPLE_SHAPE, "x")  # restored afterwards, set or not
    monkeypatch.delenv(catret_config.ENV_SAMPLE_SHAPE)
    out = tmp_path / "s"
    assert cli.main(["sample", "--out", str(out), "--products", "60", "--shape", "paper"]) == 0
    assert json.loads((out / MANIFEST_NAME).read_text())["params"]["shape"] == "paper"
    # The bundled sample of `catret materialize` / `ui` takes it from the environment.
    monkeypatch.setenv(catret_config.ENV_DATA_DIR, str(tmp_path / "data"))
    monkeypatch.delenv(catret_config.ENV_RAW_ROOT, raising=False)
    monkeypatch.setenv(catret_config.ENV_SAMPLE_SHAPE, "paper")
    ensure_bundled_sample(catret_config.CatretConfig.from_env(), 60)
    manifest = json.loads(
        (catret_config.CatretConfig.from_env().sample_root / MANIFEST_NAME).read_text()
    )
    assert manifest["params"]["shape"] == "paper" and manifest["params"]["n_products"] == 60
    with gzip.open(
        next(catret_config.CatretConfig.from_env().sample_root.rglob("*.json.gz"))
    ) as fh:
        assert fh.readline()
