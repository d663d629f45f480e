"""Tables, figures and the written report of a probe run.

* :mod:`~featstore.report.tables`: statistics and text (fold intervals, per-layer gain rows, the
  "where the knowledge is" paragraph);
* :mod:`~featstore.report.figures`: matplotlib figures on their own Agg canvas;
* :mod:`~featstore.report.document`: report blocks rendered as Markdown or HTML;
* :mod:`~featstore.report.writer`: what the report says and :func:`write_report`, the only
  function here that touches files.
"""

from .document import Block, render_html, render_markdown
from .figures import (
    GAIN_COLOR,
    GROUP_COLORS,
    PRETRAINED_COLOR,
    RANDOM_COLOR,
    new_figure,
    plot_gain,
    plot_gain_vs_parameters,
    plot_scores,
)
from .tables import (
    BASELINE_LABELS,
    METRIC_LABELS,
    ScoreSeries,
    best_layer_text,
    fold_interval,
    gain_rows,
    score_series,
    score_summary,
    sweet_spot_text,
)
from .writer import ReportFiles, ReportInputs, report_blocks, write_report

__all__ = [
    "PRETRAINED_COLOR",
    "RANDOM_COLOR",
    "GAIN_COLOR",
    "GROUP_COLORS",
    "METRIC_LABELS",
    "BASELINE_LABELS",
    "ScoreSeries",
    "Block",
    "ReportFiles",
    "ReportInputs",
    "fold_interval",
    "score_summary",
    "score_series",
    "new_figure",
    "plot_scores",
    "plot_gain",
    "plot_gain_vs_parameters",
    "gain_rows",
    "sweet_spot_text",
    "best_layer_text",
    "report_blocks",
    "render_markdown",
    "render_html",
    "write_report",
]
