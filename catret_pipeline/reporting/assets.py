"""The ``report`` asset: report.md + PNG plots under ``<data_dir>/reports/``."""

import base64

import dagster as dg
import polars as pl

from catret_pipeline.reporting.paper import SETTINGS
from catret_pipeline.reporting.plots import PLOTS, render_all
from catret_pipeline.reporting.report import margins_table, render_report, results_table
from catret_pipeline.storage.atomic import atomic_write_text
from catret_pipeline.storage.resources import CatretStorage

GROUP = "reporting"
REPORT_DIR = "reports"
REPORT_FILE = "report.md"


class ReportConfig(dg.Config):
    title: str = "catret evaluation report"
    """First heading of report.md."""
    dataset: str = ""
    """Dataset description printed under the title (empty: no line)."""


def plots_markdown(paths: dict) -> str:
    """Every PNG inline as a base64 data URI, under its caption."""
    parts = []
    for name, path in paths.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(
            f"**{PLOTS.get(path.name, name)}**\n\n![{name}](data:image/png;base64,{data})\n"
        )
    return "\n".join(parts) or "_No plots._"


@dg.asset(
    group_name=GROUP,
    kinds={"markdown", "matplotlib"},
    description="report.md beside the paper's Table 1, with PNG plots, under <data_dir>/reports/.",
)
def report(
    context: dg.AssetExecutionContext,
    config: ReportConfig,
    storage: CatretStorage,
    metrics: pl.DataFrame,
    metrics_per_query: pl.DataFrame,
    errors: pl.DataFrame,
    significance: pl.DataFrame,
    baseline_margins: pl.DataFrame,
) -> pl.DataFrame:
    out_dir = storage.path(REPORT_DIR)
    # Plots first: the report never links to a PNG that is not there yet.
    paths = render_all(out_dir, metrics, metrics_per_query, errors)
    text = render_report(
        metrics,
        metrics_per_query,
        errors,
        significance,
        plots=PLOTS,
        title=config.title,
        dataset=config.dataset,
        margins=baseline_margins,
    )
    report_path = atomic_write_text(storage.path(REPORT_DIR, REPORT_FILE), text)

    context.add_output_metadata(
        {
            "report": dg.MetadataValue.path(str(report_path)),
            "results": dg.MetadataValue.md(results_table(metrics)),
            "margins": dg.MetadataValue.md(margins_table(baseline_margins, SETTINGS)),
            # The UI renders markdown images, and a data URI needs no file server: the plots
            # show on the asset's page itself.
            "plots": dg.MetadataValue.md(plots_markdown(paths)),
        }
        | {f"plot/{name}": dg.MetadataValue.path(str(path)) for name, path in paths.items()}
    )
    rows = [{"artefact": REPORT_FILE, "path": str(report_path)}] + [
        {"artefact": name, "path": str(path)} for name, path in paths.items()
    ]
    return pl.DataFrame(rows, schema={"artefact": pl.String, "path": pl.String})


ASSETS: list = [report]
CHECKS: list = []
