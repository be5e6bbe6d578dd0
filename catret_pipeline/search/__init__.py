"""``catret search``: rank products for a category name from the materialised indexes.

Nothing is trained or rebuilt here. Vector models (``mpnet``, ``clip`` and every trained model
in ``hnsw_indexes``) search the saved HNSW index of the (model, setting); ``bm25`` scores the
titles of the setting's test collection, as ``retrieval_runs`` does.

The query vector of a name that is a category in the tree is the precomputed one (the very vector
the evaluation used). Any other name is encoded on the fly with the encoder the pipeline is
configured with, after checking that it is the encoder the stored vectors came from (a different
encoder puts the query in another space, so every score would be meaningless).
See docs/retrieval.md, "Search".
"""

from catret_pipeline.search.engine import search
from catret_pipeline.search.output import (
    format_results,
    print_results,
    render_contact_sheet,
    write_contact_sheet,
)
from catret_pipeline.search.queries import recover_prompt
from catret_pipeline.search.reading import available_models
from catret_pipeline.search.results import Hit, SearchError, SearchResults

__all__ = [
    "Hit",
    "SearchError",
    "SearchResults",
    "available_models",
    "format_results",
    "print_results",
    "recover_prompt",
    "render_contact_sheet",
    "search",
    "write_contact_sheet",
]
