"""The page at ``/`` in a real headless Chromium (Debian's, nothing downloaded): it loads the
tree, and a search renders image tiles."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import urllib.parse

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")


def chromium(*args: str, timeout: float = 120) -> str:
    """Run headless Chromium with a throwaway profile; returns stdout (the DOM for --dump-dom)."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=8000",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_search_renders_image_tiles(base_url):
    dom = chromium("--dump-dom", f"{base_url}/#q={urllib.parse.quote('Boots')}&setting=specific")
    assert dom.count('class="tile"') == 20  # k=20 is the page's default
    assert 'src="/images/image_cache/' in dom
    assert "seen in training" in dom
    assert "score 0." in dom
    # The tree was fetched and drawn, and the datalist filled for autocomplete.
    assert "Sandals (8)" in dom
    assert '<option value="Puzzles">' in dom


def test_category_page_from_the_tree(base_url, store):
    node = next(n for n in store.snapshot.nodes if n.name == "Lamps")
    dom = chromium("--dump-dom", f"{base_url}/#node={node.node_id}")
    assert "Home &gt; Lamps" in dom
    assert dom.count('class="tile"') == 20
