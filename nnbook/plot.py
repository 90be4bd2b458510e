"""One consistent matplotlib style, and the two figures every chapter draws.

* :func:`learning_curves` — loss and accuracy per epoch for one or more runs;
* :func:`cost_accuracy` — accuracy against a cost (parameters, FLOPs, bytes, ms),
  optionally with the Pareto front drawn.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt

from .ledger import TABLE_METADATA_KEY, display_record, table_record

# Sizes are chosen for the page: the book's text column is about 680 CSS px wide (a 1280-px window),
# so a figure W inches wide is shown at about 680/W px per inch (if it is wider than the column) and a
# font of P points at P * 680 / (72 W) px. Every font of this style is >= 10 pt, so >= 14 px on the page
# at the default 6.4-inch width, and a multi-panel figure up to 10.4 inches wide keeps its 10-pt tick
# labels >= 9 px (MAX_FIGURE_WIDTH_IN). Rendering at 150 dpi keeps lines and text sharp when the browser
# scales the PNG to the column (and on high-density screens).
PAGE_WIDTH_PX = 680
MIN_FONT_PT = 10
MAX_FIGURE_WIDTH_IN = 10.4

BOOK_STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 150,
    "savefig.dpi": 150,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "figure.titlesize": 13,
    "xtick.labelsize": MIN_FONT_PT,
    "ytick.labelsize": MIN_FONT_PT,
    "legend.fontsize": MIN_FONT_PT,
    "legend.title_fontsize": MIN_FONT_PT,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
    "axes.prop_cycle": plt.cycler(color=["#1b6ca8", "#e07a1f", "#3a9a50", "#c23b3b", "#7a5aa6",
                                         "#8c6d31", "#d45fa7", "#6b6b6b", "#17becf", "#bcbd22"]),
}


def use_style() -> None:
    """Apply the book's matplotlib style (called by every chapter's setup).

    150 dpi, fonts >= 10 pt (see ``MIN_FONT_PT``), white background. Keep multi-panel figures at
    most ``MAX_FIGURE_WIDTH_IN`` inches wide (:func:`page_figsize` helps), so that their smallest
    labels stay >= 9 px when the page scales the figure to its text column.
    """
    plt.rcParams.update(BOOK_STYLE)


def page_figsize(ncols: int = 1, nrows: int = 1, *, panel_width: float = 3.6, panel_height: float = 3.0):
    """A ``figsize`` for a grid of panels that stays legible on the page.

    The width is ``ncols * panel_width`` inches, capped at ``MAX_FIGURE_WIDTH_IN`` (the widest figure
    whose 10-pt labels are still >= 9 px in the book's text column); the height grows with ``nrows``
    and shrinks in proportion when the width is capped.

    Examples:
        >>> page_figsize(2)
        (7.2, 3.0)
        >>> page_figsize(4, 2)
        (10.4, 4.33)

    Raises:
        ValueError: ``ncols`` or ``nrows`` below 1, or a non-positive panel size.
    """
    if not (isinstance(ncols, int) and isinstance(nrows, int)) or ncols < 1 or nrows < 1:
        raise ValueError(f"page_figsize: ncols and nrows must be integers >= 1, got {ncols!r} and {nrows!r}")
    if panel_width <= 0 or panel_height <= 0:
        raise ValueError(f"page_figsize: panel sizes must be > 0 inches, got {panel_width!r} x {panel_height!r}")
    width = ncols * panel_width
    shrink = min(1.0, MAX_FIGURE_WIDTH_IN / width)
    return (round(width * shrink, 2), round(nrows * panel_height * shrink, 2))


def learning_curves(histories, metrics: Sequence[str] = ("loss", "acc"), title: str | None = None):
    """Plot training (solid) and validation (dashed) curves per epoch.

    Args:
        histories: one :class:`nnbook.train.History` or a mapping ``{label: History}``.
        metrics: which of ``"loss"`` and ``"acc"`` to draw, one panel each.
        title: figure title.

    Returns:
        ``(fig, axes)``.

    Raises:
        ValueError: an unknown metric name, or no history given.
    """
    from .train import History

    if isinstance(histories, History):
        histories = {"model": histories}
    if not isinstance(histories, Mapping) or not histories:
        raise ValueError("learning_curves: expected a History or a non-empty {label: History} mapping")
    bad = [m for m in metrics if m not in ("loss", "acc")]
    if bad:
        raise ValueError(f"learning_curves: metrics must be 'loss' and/or 'acc', got {bad}")
    use_style()
    fig, axes = plt.subplots(1, len(metrics), figsize=page_figsize(len(metrics), panel_height=3.2),
                             squeeze=False)
    axes = axes[0]
    for ax, m in zip(axes, metrics):
        for i, (label, h) in enumerate(histories.items()):
            color = f"C{i % 10}"
            ep = range(1, h.epochs + 1)
            ax.plot(ep, getattr(h, f"train_{m}"), color=color, label=f"{label} (train)")
            if getattr(h, f"val_{m}"):
                ax.plot(ep, getattr(h, f"val_{m}"), color=color, ls="--", label=f"{label} (validation)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy loss" if m == "loss" else "accuracy (fraction)")
        ax.set_title("Loss" if m == "loss" else "Accuracy")
    axes[-1].legend(loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, axes


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points not dominated by another (lower cost *and* higher score).

    Returns:
        Indices sorted by increasing cost.

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(costs) != len(scores):
        raise ValueError(f"pareto_front: {len(costs)} costs but {len(scores)} scores")
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -scores[i]))
    front, best = [], float("-inf")
    for i in order:
        if scores[i] > best:
            front.append(i)
            best = scores[i]
    return front


def cost_accuracy(costs: Sequence[float], accs: Sequence[float], labels: Sequence[str] | None = None, *,
                  xlabel: str = "cost", ylabel: str = "test accuracy (fraction)", logx: bool = True,
                  front: bool = False, title: str | None = None, ax=None):
    """Scatter accuracy against a cost, one labelled point per model.

    Args:
        costs: e.g. parameters, FLOPs, bytes or milliseconds (say which in ``xlabel``).
        accs: accuracies in ``[0, 1]``.
        labels: a text label per point.
        logx: logarithmic x axis (costs often span orders of magnitude).
        front: also draw the Pareto front (see :func:`pareto_front`).
        ax: draw into this axes instead of a new figure.

    Returns:
        ``(fig, ax)``.

    Raises:
        ValueError: the sequences differ in length.
    """
    if len(costs) != len(accs) or (labels is not None and len(labels) != len(costs)):
        raise ValueError("cost_accuracy: costs, accs and labels must have the same length")
    use_style()
    if ax is None:
        fig, ax = plt.subplots()
    else:
        fig = ax.figure
    ax.scatter(costs, accs, s=36, zorder=3)
    if labels is not None:
        for c, a, t in zip(costs, accs, labels):
            ax.annotate(t, (c, a), textcoords="offset points", xytext=(4, 4), fontsize=MIN_FONT_PT)
    if front:
        idx = pareto_front(costs, accs)
        ax.step([costs[i] for i in idx], [accs[i] for i in idx], where="post", color="C1", lw=1.2,
                label="Pareto front", zorder=2)
        ax.legend(loc="lower right")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig, ax


def table(df, *, formats: Mapping[str, str] | None = None, caption: str | None = None, missing: str = "—",
          record: str | None = None):
    """Show a results table the book's way: no index, thousands separators, "—" for missing.

    Every chapter's results table goes through this helper, so all tables look alike
    (the book's CSS, ``book/_static/nnbook.css``, adds padding and lets wide tables scroll
    in their own box). Numeric columns are right-aligned, header included.
    Put units in the column names (``"latency (ms)"``, ``"size (KB)"``).

    Args:
        df: a ``pandas.DataFrame``.
        formats: ``{column: format}`` with ``str.format`` specs such as ``"{:.1%}"``
            or ``"{:,.0f}"``; other numeric columns get ``"{:,.3g}"`` for floats and
            ``"{:,}"`` for integers.
        caption: an optional caption shown above the table.
        missing: the text shown for NaN/None.
        record: a *family* name (``"pruning"``, ``"architectures"``, ...). When given, the
            table is displayed at once (as the same HTML) and its values are stored in the
            output's metadata under ``"nnbook_table"`` (see :func:`nnbook.ledger.table_record`),
            so that ``tools/build_appendices.py`` can gather every chapter's results into appendix A.

    Returns:
        A pandas ``Styler`` (it renders as HTML in Jupyter and in the book; its
        ``text/plain`` form is only the object's name, so nbval compares the HTML).
        With ``record`` inside IPython the table is already displayed and ``None`` is
        returned (so it is not shown twice); outside IPython the ``Styler`` is returned.

    Raises:
        TypeError: ``df`` is not a DataFrame, ``formats`` not a mapping, ``record`` not a string.
        ValueError: ``formats`` names a column that does not exist; ``record`` is empty.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"table: df must be a pandas DataFrame, got {type(df).__name__}")
    if record is not None and (not isinstance(record, str) or not record.strip()):
        raise (TypeError if not isinstance(record, str) else ValueError)(
            f"table: record must be a non-empty family name such as 'pruning', got {record!r}")
    formats = dict(formats or {})
    if not isinstance(formats, dict):
        raise TypeError(f"table: formats must be a mapping of column -> format, got {type(formats).__name__}")
    unknown = [c for c in formats if c not in df.columns]
    if unknown:
        raise ValueError(f"table: formats names columns that do not exist: {unknown}")
    for col in df.columns:
        if col in formats:
            continue
        if pd.api.types.is_bool_dtype(df[col]):
            continue
        if pd.api.types.is_integer_dtype(df[col]):
            formats[col] = "{:,}"
        elif pd.api.types.is_float_dtype(df[col]):
            formats[col] = "{:,.3g}"
    import hashlib

    styler = df.style.hide(axis="index").format(formats, na_rep=missing)
    # a stable element id (pandas picks a random one), so stored and fresh HTML compare equal
    key = hashlib.sha1(repr((list(map(str, df.columns)), df.shape, caption)).encode()).hexdigest()[:8]
    styler = styler.set_uuid(f"nnbook{key}").set_table_attributes('class="nnbook-table"')
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    if numeric:  # numbers line up on the right, header included
        right = [{"selector": "td", "props": "text-align: right"}, {"selector": "th", "props": "text-align: right"}]
        styler = styler.set_table_styles({c: right for c in numeric}, overwrite=False)
    if caption:
        styler = styler.set_caption(caption)
    if record is None:
        return styler
    rec = table_record(df, record, caption)
    plain = f"table {rec['family']}: {len(rec['rows'])} rows x {len(rec['columns'])} columns"
    return None if display_record(plain, styler.to_html(), TABLE_METADATA_KEY, rec) else styler
