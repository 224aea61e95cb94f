"""Figures (matplotlib, imported inside each function; no pyplot state, Agg rendering).

Importing this module needs only numpy and ``poisoncert.bounds``, so the math and the CLI load
fast and never touch a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from poisoncert._validation import INT_LIMIT, check_choice, check_int, param_error
from poisoncert.bounds import MODEL_ALIASES, MODELS, SCHEMES, SelectionBound

__all__ = ["FIGURE2_SETTINGS", "default_rho_max", "delta_curves", "plot_delta"]

#: Most points per curve of ``delta_curves`` (a few float64 arrays of this length per scheme).
MAX_POINTS = 1_000_001

#: The paper's Figure 2 panels, ``(n, ns)``: MNIST 1/7 (left) and CIFAR-10 sized (right).
FIGURE2_SETTINGS = ((13007, 10), (50000, 1000))

_STYLES = {"without_replacement": "-", "with_replacement": "--", "binomial": "-."}
_LABELS = {
    "without_replacement": "bagging without replacement (1)",
    "with_replacement": "bagging with replacement (2)",
    "binomial": "binomial selection (3), p = ns / n",
}


def _whole_ticks():
    """A tick locator for an axis of whole numbers (radii, sizes, counts): ticks 1, 2, 5 or 10
    times a power of ten apart. Matplotlib's integer locator also steps by 4 or 15 (0, 4, 8,
    ..., 32 on an axis to 35)."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True, steps=[1, 2, 5, 10])


def _save_png(fig, path: str | Path, dpi: int) -> None:
    """``fig`` as a PNG at ``path``, atomically (``runsafe.save_with``): a Ctrl-C or a full
    disk while it is drawn leaves the earlier file whole, never a part of the new one; the
    temporaries of ``path`` that a killed earlier writer left are removed first."""
    from poisoncert.runsafe import save_with

    save_with(Path(path), lambda f: fig.savefig(f, format="png", dpi=dpi), clean=True)


def _bound(scheme: str, n: int, ns: int, model: str) -> SelectionBound:
    # binomial selection with ns means p = ns / n, held fixed
    return SelectionBound(scheme, n, ns=ns, model=model)


def default_rho_max(n: int, ns: int, *, model: str = "P6", schemes: Sequence[str] = SCHEMES) -> int:
    """The first ``rho`` at which ``delta`` reaches 1 for every scheme (so the widest scheme's
    curve just reaches 1): beyond it no gap (at most 1) certifies anything."""
    return max(int(_bound(s, n, ns, model).radius(1.0)) + 1 for s in schemes)


def delta_curves(n: int, ns: int, *, model: str = "P6", rho_max: int | None = None,
                 n_points: int = 400, schemes: Sequence[str] = SCHEMES,
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``rho`` grid (at most ``n_points`` integers from 0 to ``rho_max``) and ``delta(rho)`` per
    scheme (binomial selection with ``p = ns / n``); ``+inf`` where nothing can be certified."""
    where = "delta_curves"
    n_points = check_int(n_points, "n_points", where, low=2, high=MAX_POINTS)
    if rho_max is None:
        rho_max = default_rho_max(n, ns, model=model, schemes=schemes)
    rho_max = check_int(rho_max, "rho_max", where, low=1, high=INT_LIMIT)
    rhos = np.unique(np.round(np.linspace(0, rho_max, n_points)).astype(np.int64))
    curves = {}
    for s in schemes:
        b = _bound(s, n, ns, model)
        curves[b.scheme] = np.asarray(b.delta(rhos), dtype=np.float64)
    return rhos, curves


def plot_delta(path: str | Path | None = None, *,
               settings: Sequence[tuple[int, int]] = FIGURE2_SETTINGS, model: str = "P6",
               rho_max: int | Sequence[int | None] | None = None, n_points: int = 400,
               schemes: Sequence[str] = SCHEMES, dpi: int = 150):
    """The paper's Figure 2: ``delta(rho)`` of the selection schemes, one panel per ``(n, ns)``.

    Defaults reproduce the figure: panels ``n = 13007, ns = 10`` and ``n = 50000, ns = 1000``,
    model P6, the three schemes (binomial with ``p = ns / n``), ``rho`` from 0 to where
    ``delta`` reaches 1 for the widest scheme (``default_rho_max``). ``rho_max`` may be one int
    for every panel or one per panel. Writes a PNG to ``path`` when given; returns the
    matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    model = check_choice(model, "model", "plot_delta", MODELS, MODEL_ALIASES)
    dpi = check_int(dpi, "dpi", "plot_delta", low=10, high=1200)
    settings = [tuple(s) for s in settings]
    if not settings or any(len(s) != 2 for s in settings):
        raise param_error("settings", "plot_delta", "a non-empty sequence of (n, ns) pairs",
                          settings)
    if rho_max is None or isinstance(rho_max, (int, np.integer)):
        rho_maxes = [rho_max] * len(settings)
    else:
        rho_maxes = list(rho_max)
        if len(rho_maxes) != len(settings):
            raise param_error("rho_max", "plot_delta", f"an int or {len(settings)} values",
                              rho_max)

    fig = Figure(figsize=(5.0 * len(settings), 4.0), layout="constrained")
    axes = fig.subplots(1, len(settings), squeeze=False)[0]
    for ax, (n, ns), rm in zip(axes, settings, rho_maxes, strict=True):
        rhos, curves = delta_curves(n, ns, model=model, rho_max=rm, n_points=n_points,
                                    schemes=schemes)
        for scheme, d in curves.items():
            ax.plot(rhos, np.where(np.isfinite(d), d, np.nan), ls=_STYLES.get(scheme, "-"),
                    label=_LABELS.get(scheme, scheme))
        ax.set_xlim(0, rhos[-1])
        ax.xaxis.set_major_locator(_whole_ticks())  # rho: no 0.2, 0.4 where few
        ax.set_ylim(0, 1.05)
        ax.axhline(1.0, color="0.7", lw=0.8, ls=":")
        ax.set_xlabel(radius_label(model))
        ax.set_ylabel(r"$\delta(\rho)$")
        ax.set_title(f"n = {n}, ns = {ns}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
    if path is not None:
        _save_png(fig, path, dpi)
    return fig


# --------------------------------------------------------------------------------------------
# Certified accuracy (poisoncert.experiment)

__all__ += ["MODEL_OPERATIONS", "plot_certified_accuracy", "radius_label"]


#: What a radius counts under each poisoning model (spec/certificates.md), one each: a
#: deletion (P2, P5, P6) is an operation that leaves no poisoned sample behind, so the labels
#: name the operations, as certify's radius_unit and docs/certificates.md count them.
MODEL_OPERATIONS = {"P1": "insertions", "P2": "deletions", "P3": "modifications",
                    "P4": "insertions, modifications", "P5": "deletions, modifications",
                    "P6": "insertions, deletions, modifications"}


def radius_label(model: str = "P6") -> str:
    """The x label of a figure over the radius ``rho`` under ``model`` (certified accuracy,
    Figure 2's delta): the operations its radius counts (certify --model P1 was labelled
    "insertions, deletions, modifications"; "poisoned samples" counted a deletion, which
    leaves none, as one)."""
    model = check_choice(model, "model", "radius_label", MODELS, MODEL_ALIASES)
    return r"$\rho$ (" + MODEL_OPERATIONS[model] + f"; model {model})"


def plot_certified_accuracy(curves, path: str | Path | None = None, *, title: str | None = None,
                            xlabel: str | None = None, dpi: int = 150):
    """Certified accuracy against the radius ``rho``, one step curve per entry of ``curves``.

    ``curves`` maps a legend label to ``(rho, accuracy)`` arrays (``accuracy[j]``: fraction of
    test points correctly classified with a certified radius ``>= rho[j]``). ``xlabel``
    defaults to ``radius_label("P6")``. Writes a PNG to ``path`` when given; returns the
    matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    if not curves:
        raise param_error("curves", "plot_certified_accuracy",
                          "a non-empty mapping of label -> (rho, accuracy)", curves)
    checked = {}
    for label, (rho, acc) in curves.items():
        rho = np.asarray(rho, dtype=np.int64)
        acc = np.asarray(acc, dtype=np.float64)
        if rho.shape != acc.shape or rho.ndim != 1 or rho.size == 0:
            raise param_error("curves", "plot_certified_accuracy",
                              "(rho, accuracy) pairs of equal-length 1-D arrays",
                              f"{label!r}: shapes {rho.shape} and {acc.shape}")
        checked[label] = (rho, acc)
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    _accuracy_axes(ax, checked, radius_label() if xlabel is None else xlabel)
    if title:
        _fit_title(fig, ax, str(title))
    ax.legend(fontsize="small", loc="best")  # "upper right" covered a curve high to the end
    if path is not None:
        _save_png(fig, path, dpi)
    return fig


def _fit_title(fig, ax, title: str) -> None:
    """``title`` over ``ax``, broken into lines where one line would run past the figure's
    edges (matplotlib cuts it off there: "... (model P6, alpha 0.001" lost its end on
    certify's 6-inch figure): after its first ": " (what was run, then what is shown), then
    at spaces. The title is centred on the axes, which the y label moves right of the
    figure's centre: the room is twice the nearer edge's distance."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    text = ax.set_title(title)
    canvas = fig.canvas if hasattr(fig.canvas, "get_renderer") else FigureCanvasAgg(fig)
    parts = title.split(": ", 1)
    parts[:-1] = [p + ":" for p in parts[:-1]]
    chars = None  # first the title's own lines
    while True:
        fig.draw_without_rendering()  # the constrained layout places the axes
        renderer = canvas.get_renderer()
        box = ax.get_window_extent(renderer)
        centre = box.x0 + box.width / 2
        room = 0.97 * 2 * min(centre - fig.bbox.x0, fig.bbox.x1 - centre)
        width = text.get_window_extent(renderer).width
        if width <= room:
            return
        lines = text.get_text().splitlines()
        longest = max(len(line) for line in lines)
        if chars is not None and (chars <= 10 or " " not in max(lines, key=len)):
            return  # a word longer than the room: as it is
        if chars is None and len(parts) > 1:
            chars = len(title)
        else:  # fewer characters a line each time: ends, at 10
            chars = max(10, min(longest, chars or longest) - 1)
            chars = min(chars, max(10, int(longest * room / width)))
        text.set_text("\n".join(textwrap.fill(p, chars, break_long_words=False)
                                for p in parts))


def _rho_extent(curves) -> int:
    """The radius the certified-accuracy axes reach, at least 1: for a curve that ends at 0,
    the ``rho`` of its last step (the rows after it, a table's radii past every certified
    radius, repeat the 0); for a curve that ends above 0, its last ``rho`` (the accuracy it
    holds up to there is what the figure shows)."""
    top = 1
    for rho, acc in curves.values():
        rho = np.asarray(rho, dtype=np.int64)
        acc = np.asarray(acc, dtype=np.float64)
        if acc.size and acc[-1] != 0:
            top = max(top, int(rho[-1]))
            continue
        steps = np.flatnonzero(acc[1:] != acc[:-1])
        top = max(top, int(rho[steps[-1] + 1]) if steps.size else int(rho[0]) if rho.size
                  else 0)
    return top


def _accuracy_axes(ax, curves, xlabel: str, *, note_size: str = "small") -> None:
    """Draw certified-accuracy step curves (``label -> (rho, accuracy)``) on ``ax``.

    The x axis reaches a little past the last step of any curve (``_rho_extent``): a curve's
    final drop to 0 stood on the right-hand frame, unseen, so a run whose accuracy reaches 0
    at rho = 8 read as 0.26 there, and a table radius far past every certified radius (e.g.
    ``--rhos 0,5,100000``) squeezed the whole curve into the left-hand frame. The y axis starts
    a little below 0, so a curve at 0 is drawn above the frame rather than on it, and a figure
    whose curves are all 0 says so; a curve of one point is a marker. Each curve has its own
    line style: told apart in a greyscale print, where the colours are one grey."""

    top = _rho_extent(curves)
    all_zero = True
    for j, (label, (rho, acc)) in enumerate(curves.items()):
        rho = np.asarray(rho, dtype=np.int64)
        acc = np.asarray(acc, dtype=np.float64)
        all_zero &= bool(np.all(acc == 0))
        ax.plot(rho, acc, drawstyle="steps-post", label=str(label),
                ls=_LINE_STYLES[j % len(_LINE_STYLES)], marker="o" if rho.size == 1 else None)
    ax.set_xlim(0, top + max(1.0, 0.03 * top))
    ax.xaxis.set_major_locator(_whole_ticks())  # rho is a whole number
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("certified accuracy")
    ax.grid(alpha=0.3)
    if all_zero:
        ax.text(0.5, 0.5, "no test point is certified correct\n(certified accuracy 0 at "
                "every radius)", transform=ax.transAxes, ha="center", va="center",
                fontsize=note_size, color="0.3")


#: Line styles of the certified-accuracy curves, in turn.
_LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1.5, 1, 1.5, 1, 1.5)), (0, (8, 2)),
                (0, (1, 1)), (0, (3, 1, 3, 1, 1, 1)))


# --------------------------------------------------------------------------------------------
# Result figures (appended for experiments/report.py): panels of certified-accuracy curves,
# the paper's Figure 5 (sub-dataset sizes and base-classifier accuracy by size)

__all__ += ["plot_certified_accuracy_panels", "plot_subset_sizes"]


def plot_certified_accuracy_panels(panels, path: str | Path | None = None, *,
                                   xlabel: str | None = None,
                                   ncols: int | None = None, dpi: int = 110,
                                   legend_loc: str = "lower left"):
    """Several certified-accuracy panels side by side (the paper's Figures 4 and 6).

    ``panels`` maps a panel title to a mapping ``label -> (rho, accuracy)`` (as for
    ``plot_certified_accuracy``). ``legend_loc``: where matplotlib puts each legend (its
    ``loc``: "upper right" where the curves stay low), or ``"free"``: inside the panel where
    it covers no curve (matplotlib's "best"), else beside the panel (``_free_legends``: the
    figure widened for it). ``xlabel`` defaults to ``radius_label("P6")``. Writes a PNG to
    ``path`` when given; returns the ``Figure``.
    """
    from matplotlib.figure import Figure

    if not panels:
        raise param_error("panels", "plot_certified_accuracy_panels",
                          "a non-empty mapping of title -> curves", panels)
    k = len(panels)
    ncols = min(k, 3) if ncols is None else check_int(ncols, "ncols",
                                                       "plot_certified_accuracy_panels", low=1)
    nrows = -(-k // ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, curves) in zip(axes, panels.items(), strict=False):
        _accuracy_axes(ax, curves, radius_label() if xlabel is None else xlabel,
                       note_size="x-small")
        ax.set_title(str(title), fontsize="medium")
        ax.legend(fontsize="x-small", loc="best" if legend_loc == "free" else legend_loc)
    for ax in axes[k:]:
        ax.set_visible(False)
    if legend_loc == "free":
        _free_legends(fig, list(axes[:k]), fontsize="x-small")
    if path is not None:
        _save_png(fig, path, dpi)
    return fig


def _covers_a_curve(ax, box) -> bool:
    """Whether the display box ``box`` meets a line of ``ax`` as it is drawn (its path, steps
    included, and its points: what matplotlib's "best" counts)."""
    for line in ax.get_lines():
        path = line.get_transform().transform_path(line.get_path())
        if len(path.vertices) and (box.count_contains(path.vertices)
                                   or path.intersects_bbox(box, filled=False)):
            return True
    return False


def _free_legends(fig, axes, **kwargs) -> None:
    """Each legend of ``axes`` where it covers no curve: matplotlib's "best" where that place
    is free (``_covers_a_curve``; "best" takes the least covered of its places when none is),
    else beside the panel (right of it, as ``plot_attack``'s): a legend of ten entries
    (experiments/report_agg.py's comparison) finds no free place inside. The figure is
    widened by the widest legend moved beside each column of panels, so that the panels keep
    their width; the others are checked again after."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if hasattr(fig.canvas, "get_renderer") else FigureCanvasAgg(fig)
    inside = list(axes)
    beside: dict[int, float] = {}  # column -> the widest legend moved beside it (inches)
    while inside:
        fig.draw_without_rendering()  # the layout places the axes and the legends
        renderer = canvas.get_renderer()
        moved = False
        for ax in list(inside):
            legend = ax.get_legend()
            if legend is None:
                inside.remove(ax)
                continue
            box = legend.get_window_extent(renderer)
            if not _covers_a_curve(ax, box):
                continue
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                      **kwargs)
            inside.remove(ax)
            column = ax.get_subplotspec().colspan.stop if ax.get_subplotspec() else 0
            grow = max(0.0, box.width / fig.dpi + 0.1 - beside.get(column, 0.0))
            if grow:
                beside[column] = beside.get(column, 0.0) + grow
                fig.set_figwidth(fig.get_figwidth() + grow)
            moved = True
        if not moved:
            return


def plot_subset_sizes(sizes, accuracy, path: str | Path | None = None, *,
                      title: str | None = None, dpi: int = 110):
    """The paper's Figure 5: the distribution of sub-dataset sizes (left) and the mean test
    accuracy of the base classifiers trained on each size (right; abstaining classifiers of
    empty sub-datasets have no accuracy and are left out). ``sizes``, ``accuracy``: one entry
    per base classifier (``accuracy`` NaN where it abstains). Sizes and counts are whole
    numbers on the axes (sizes 0 to 20 had ticks at 2.5, 7.5, ...)."""
    from matplotlib.figure import Figure

    sizes = np.asarray(sizes, dtype=np.int64)
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if sizes.shape != accuracy.shape or sizes.ndim != 1 or sizes.size == 0:
        raise param_error("sizes", "plot_subset_sizes", "a 1-D array as long as accuracy",
                          f"shapes {sizes.shape} and {accuracy.shape}")
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    values, counts = np.unique(sizes, return_counts=True)
    left.bar(values, counts, width=0.8, color="C0")
    left.set_xlabel("sub-dataset size (samples of $D^p$)")
    left.set_ylabel("base classifiers")
    left.xaxis.set_major_locator(_whole_ticks())
    left.yaxis.set_major_locator(_whole_ticks())
    left.grid(alpha=0.3)
    ok = np.isfinite(accuracy)
    vals = np.unique(sizes[ok])
    means = np.array([accuracy[ok & (sizes == v)].mean() for v in vals])
    right.plot(vals, means, "o-", color="C1")
    right.set_xlabel("sub-dataset size")
    right.xaxis.set_major_locator(_whole_ticks())
    right.set_ylabel("mean test accuracy")
    right.set_ylim(0, 1.02)
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    if path is not None:
        _save_png(fig, path, dpi)
    return fig


# --------------------------------------------------------------------------------------------
# Attacks against a run (poisoncert.experiment.attack)

__all__ += ["plot_attack"]


def _thin_budget_labels(fig, axis, budgets: list) -> None:
    """Blank the tick labels of ``axis`` (the attack panel's budgets, one tick each) that
    would overlap the label before them, as drawn: budgets 1..40 each labelled ran into one
    smear. The smallest and the largest budget keep theirs; where no two labels come within
    4 points (1, 2, 4, 8, 12, 16; 1..9) every budget is labelled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.ticker import FuncFormatter

    if len(budgets) < 2:
        return
    canvas = fig.canvas if hasattr(fig.canvas, "get_renderer") else FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    renderer = canvas.get_renderer()
    boxes = {float(t.get_position()[0]): t.get_window_extent(renderer)
             for t in axis.get_xticklabels() if t.get_text()}
    values = [float(b) for b in budgets if float(b) in boxes]
    if len(values) < 2:
        return
    pad = renderer.points_to_pixels(4.0)

    def apart(a: float, b: float) -> bool:
        return boxes[a].x1 + pad <= boxes[b].x0

    kept = [values[0]]
    for v in values[1:]:
        if apart(kept[-1], v):
            kept.append(v)
    if kept[-1] != values[-1]:  # the largest budget labelled, in place of labels too close
        while len(kept) > 1 and not apart(kept[-1], values[-1]):
            kept.pop()
        kept.append(values[-1])
    if len(kept) == len(values):
        return
    shown = set(kept)
    axis.xaxis.set_major_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if float(v) in shown else ""))


def plot_attack(curves, summary, path: str | Path | None = None, *, title: str | None = None,
                dpi: int = 150):
    """Two panels: the clean run's certified accuracy against the radius (``curves``: label ->
    ``(rho, accuracy)``), and each attack's success against its budget (``summary``: the rows
    of ``attack_run``): the share of attacked test points whose prediction changed (solid)
    beside the share not certified at that budget (dashed, the most the certificate allows)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullLocator

    fig = Figure(figsize=(13.0, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    _accuracy_axes(left, curves, r"radius $\rho$ (operations)")  # whole-number radii
    left.set_ylabel("certified accuracy (clean run)")
    left.legend(fontsize="small", loc="best")
    groups: dict = {}
    for row in summary:
        groups.setdefault((row["aggregation"], row["attack"]), []).append(row)
    colors = {}
    first = next(iter(groups))[0] if groups else None
    for (agg, attack), rows in groups.items():
        rows = sorted(rows, key=lambda r: r["budget"])
        b = [r["budget"] for r in rows]
        n = [max(r["trials"], 1) for r in rows]
        success = [(r["success_beyond"] + r["changed_within"]) / m
                   for r, m in zip(rows, n, strict=True)]
        bound = [r["beyond"] / m for r, m in zip(rows, n, strict=True)]
        marker = {"vote": "o", "roe": "s"}.get(agg, "^")
        line, = right.plot(b, success, marker=marker, label=f"{agg}, {attack}: changed",
                           color=colors.get(attack))
        colors.setdefault(attack, line.get_color())
        if agg == first:  # the bound of the first aggregation only, for legibility
            right.plot(b, bound, linestyle="--", color=line.get_color(), alpha=0.6,
                       label=f"{agg}, {attack}: not certified at r")
    right.set_xscale("log", base=2)
    budgets = sorted({r["budget"] for r in summary})
    if budgets:  # a tick at each budget tried (log 2 ticks left 3, 12, 24 unlabelled)
        right.set_xticks(budgets)
        right.xaxis.set_minor_locator(NullLocator())
    right.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 1, 2, 4: budgets
    right.set_xlabel("budget r (poisoning operations)")
    right.set_ylabel("share of attacked test points")
    right.set_ylim(-0.02, 1.02)  # as the left panel: a share of 0 drawn above the frame
    right.grid(alpha=0.3)
    # beside the panel: inside it the entries (two per attack) cover the curves
    right.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                 borderaxespad=0.0)
    if title:
        fig.suptitle(title)
    _thin_budget_labels(fig, right, budgets)  # many budgets (1..40): no overlapping labels
    if path is not None:
        _save_png(fig, path, dpi)
    return fig
