"""``catret search --catalogue``: the CLI as a thin client of the serving store."""

from __future__ import annotations

from catret_pipeline import config as catret_config
from catret_pipeline.cli import main


def test_search_catalogue_prints_the_stores_ranking(tiny_dir, store, monkeypatch, tmp_path, capsys):
    # The CLI writes these into os.environ; through monkeypatch they are put back afterwards.
    monkeypatch.setenv(catret_config.ENV_DATA_DIR, str(tmp_path / "unused"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    rc = main(
        [
            "search",
            "Boots",
            "--catalogue",
            "--data-dir",
            str(tiny_dir),
            "-k",
            "3",
            "--setting",
            "all",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert 'query "Boots"  model minilm  setting all  k=3  query vector: precomputed' in out
    for hit in store.search("Boots", 3, "all"):
        assert hit.asin in out


def test_search_catalogue_bad_input_is_an_error_line(tiny_dir, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(catret_config.ENV_DATA_DIR, str(tmp_path / "unused"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert main(["search", "Boots", "--catalogue", "--data-dir", str(tiny_dir), "-k", "0"]) == 2
    assert "k must be between" in capsys.readouterr().err
