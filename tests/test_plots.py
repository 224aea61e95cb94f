"""poisoncert.plots: the certified-accuracy panels (the report's Figures 4 and 6) draw what
they are given, where they are told."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from poisoncert import plots  # noqa: E402


def _curves(k: int) -> dict:
    return {f"curve {j}": (np.arange(5), np.linspace(0.4, 0.0, 5) / (j + 1)) for j in range(k)}


def test_panels_draw_each_curve_in_its_panel_and_hide_the_spare_axes(tmp_path):
    panels = {"a": _curves(2), "b": _curves(1), "c": _curves(3), "d": _curves(1)}
    fig = plots.plot_certified_accuracy_panels(panels, tmp_path / "p.png")
    axes = fig.get_axes()
    assert len(axes) == 6  # two rows of three; the last two hidden
    assert [ax.get_visible() for ax in axes] == [True] * 4 + [False] * 2
    assert [ax.get_title() for ax in axes[:4]] == list(panels)
    for ax, curves in zip(axes, panels.values(), strict=False):
        assert [t.get_text() for t in ax.get_legend().get_texts()] == list(curves)
        drawn = ax.get_lines()
        np.testing.assert_array_equal(drawn[-1].get_ydata(), list(curves.values())[-1][1])
        assert ax.get_xlim() == (0, 5)  # the last step (rho 4) inside the frame, not on it
        assert all(float(t).is_integer() for t in ax.get_xticks())  # rho: whole numbers
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_panels_put_the_legend_where_asked():
    loc = {}
    for where in ("lower left", "upper right"):
        fig = plots.plot_certified_accuracy_panels({"a": _curves(2)}, legend_loc=where)
        loc[where] = fig.get_axes()[0].get_legend()._loc
    assert loc["lower left"] == 3 and loc["upper right"] == 1  # matplotlib's codes
    with pytest.raises(ValueError, match="panels"):
        plots.plot_certified_accuracy_panels({})


def test_attack_plot_keeps_its_legend_off_the_curves(tmp_path):
    """The attack panel's legend (two entries per attack) sits beside the axes, not over the
    curves, and the budgets read as whole numbers."""
    rows = [{"aggregation": "vote", "attack": a, "budget": b, "trials": 10, "changed_within": 0,
             "success_beyond": k, "beyond": 9} for k, a in enumerate(("insert", "remove", "flip",
                                                                        "backdoor"))
            for b in (1, 2, 4)]
    fig = plots.plot_attack({"vote, P1": (np.arange(5), np.linspace(0.9, 0, 5))}, rows,
                            tmp_path / "a.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    right = fig.get_axes()[1]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = right.get_legend().get_window_extent(renderer)
    assert len(right.get_legend().get_texts()) == 8
    assert legend.x0 >= right.get_window_extent(renderer).x1  # beside the panel
    assert legend.x1 <= fig.bbox.x1  # and inside the figure
    labels = [t.get_text() for t in right.get_xticklabels() if t.get_text()]
    assert {"1", "2", "4"} <= set(labels), labels
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attack_plot_labels_every_budget_it_tried():
    """Budgets 1, 2, 3, 4 (or experiments/run.py's 1, 2, 4, 8, 12, 16) on the log-2 axis had
    ticks at powers of two only: the points of 3 and 12 stood unlabelled (a fresh-eyes
    review). Each budget tried is a labelled tick, and only those; the radii beside them are
    whole numbers (a run certified up to 4 showed 0.5, 1.5, ...)."""
    for budgets in ((1, 2, 3, 4), (1, 2, 4, 8, 12, 16), (5,)):
        rows = [{"aggregation": "knn", "attack": "flip", "budget": b, "trials": 4,
                 "changed_within": 0, "success_beyond": 1, "beyond": 2} for b in budgets]
        fig = plots.plot_attack({"knn, P3": (np.arange(5), np.linspace(0.9, 0, 5))}, rows)
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig).draw()
        right = fig.get_axes()[1]
        labels = [t.get_text() for t in right.get_xticklabels() if t.get_text()]
        shown = [float(v) for v in right.get_xticks()
                 if right.get_xlim()[0] <= v <= right.get_xlim()[1]]
        assert labels == [str(b) for b in budgets] and shown == list(budgets), (labels, shown)
        assert all(float(t).is_integer() for t in fig.get_axes()[0].get_xticks())


def test_delta_out_interrupted_while_drawn_keeps_the_earlier_figure(tmp_path, monkeypatch):
    """``poisoncert delta --out`` stopped (Ctrl-C) while matplotlib writes the PNG: the
    earlier figure stays whole (savefig wrote straight into it, leaving a truncated PNG), and
    no temporary file is left beside it."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    out = tmp_path / "figure2.png"
    r = CliRunner().invoke(app, ["delta", "--steps", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    before = out.read_bytes()
    interrupt_savefig(monkeypatch)
    r = CliRunner().invoke(app, ["delta", "--steps", "3", "--out", str(out)])
    assert r.exit_code == 130, r.output
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure2.png"]


def interrupt_savefig(monkeypatch) -> None:
    """Make matplotlib's ``Figure.savefig`` write its file, cut it to 100 bytes (half a PNG)
    and raise ``KeyboardInterrupt``, as Ctrl-C while a figure is written."""
    from matplotlib.figure import Figure

    real = Figure.savefig

    def interrupted(self, fname, **kw):
        real(self, fname, **kw)
        if hasattr(fname, "truncate"):
            fname.truncate(100)
        else:
            with open(fname, "r+b") as f:
                f.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)


def test_attack_plot_labels_of_many_budgets_do_not_overlap(tmp_path):
    """A label at every budget tried ran 40 budgets (``--budgets 1,2,...,40``) into one
    unreadable smear of digits (31 of 39 neighbouring labels overlapping; a fresh-eyes
    review). Every budget keeps its tick; labels that would overlap the one before are left
    out, the smallest and the largest budget labelled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    budgets = tuple(range(1, 41))
    rows = [{"aggregation": "knn", "attack": "flip", "budget": b, "trials": 4,
             "changed_within": 0, "success_beyond": 1, "beyond": 2} for b in budgets]
    fig = plots.plot_attack({"knn, P3": (np.arange(5), np.linspace(0.9, 0, 5))}, rows,
                            tmp_path / "a.png")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    right = fig.get_axes()[1]
    assert [float(v) for v in right.get_xticks()] == [float(b) for b in budgets]
    labels = [t for t in right.get_xticklabels() if t.get_text()]
    texts = [t.get_text() for t in labels]
    assert texts[0] == "1" and texts[-1] == "40" and 8 <= len(texts) < 40, texts
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False)), texts


def test_certified_accuracy_shows_the_last_step_and_not_the_table_radii_past_it():
    """A run's curve drops to 0 one past its largest radius: the drop stood on the right-hand
    frame, unseen (a DPA run with accuracy 0 at rho = 8 read as 0.26 there), and a table
    radius far past every certified radius (``certify --rhos 0,5,100000``) set the axis to
    100000, the whole curve squeezed into the left-hand frame. The axis ends a little past
    the last step of any curve; a curve at 0 lies above the lower frame, not on it."""
    rho = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 100000])
    acc = np.array([0.93, 0.89, 0.86, 0.82, 0.76, 0.67, 0.52, 0.26, 0.0, 0.0])
    for fig in (plots.plot_certified_accuracy({"dpa": (rho, acc)}),
                plots.plot_certified_accuracy_panels({"p": {"dpa": (rho, acc)}})):
        ax = fig.get_axes()[0]
        line, = ax.get_lines()
        np.testing.assert_array_equal(line.get_xdata(), rho)  # the data as given
        np.testing.assert_array_equal(line.get_ydata(), acc)
        lo, hi = ax.get_xlim()
        assert lo == 0 and 8 < hi <= 10, (lo, hi)  # the drop at 8 inside, 100000 not shown
        assert ax.get_ylim()[0] < 0 < 1 < ax.get_ylim()[1]
        assert all(float(t).is_integer() for t in ax.get_xticks())
    # two curves: the axis reaches the later one's last step
    fig = plots.plot_certified_accuracy({"a": ([0, 1, 2, 50], [0.9, 0.5, 0.0, 0.0]),
                                         "b": ([0, 3, 4, 50], [0.9, 0.8, 0.0, 0.0])})
    assert 4 < fig.get_axes()[0].get_xlim()[1] <= 6
    # a curve that still holds accuracy at its last radius (a report's table radii) is drawn
    # to it: the axis stopped at 2 for a flat 0.9 that holds up to 100000
    for curve in (([0, 5, 100000], [0.9, 0.9, 0.9]), ([0, 5, 800], [0.9, 0.4, 0.4])):
        hi = plots.plot_certified_accuracy({"a": curve}).get_axes()[0].get_xlim()[1]
        assert curve[0][-1] <= hi <= 1.05 * curve[0][-1], (curve, hi)


def test_certified_accuracy_of_nothing_certified_says_so():
    """Every prediction abstaining (or wrong): the curve at 0 stood on the frame and the
    figure looked empty, a legend and no line. The line is drawn above the frame and the
    figure says that no test point is certified correct; a curve of one point is a marker,
    not an invisible line of length 0."""
    fig = plots.plot_certified_accuracy({"all abstain": ([0, 1], [0.0, 0.0])})
    ax = fig.get_axes()[0]
    assert ax.get_ylim()[0] < 0
    assert any("no test point is certified correct" in t.get_text() for t in ax.texts)
    fig = plots.plot_certified_accuracy({"some": ([0, 1], [0.5, 0.0])})
    assert not fig.get_axes()[0].texts
    fig = plots.plot_certified_accuracy({"one rho": ([3], [0.98])})
    line, = fig.get_axes()[0].get_lines()
    assert line.get_marker() not in (None, "None", "", " ")
    assert fig.get_axes()[0].get_xlim()[1] > 3


def test_certified_accuracy_curves_differ_in_line_style_and_keep_the_legend_off_them():
    """The demo's three curves (the report's panels, the attack figure's) differed in colour
    only: printed in greyscale they were one grey. Each curve has its own line style. The
    legend no longer sits in the upper right whatever the curves: a curve that stays high to
    the end ran under it."""
    curves = {f"c{j}": (np.arange(6), np.linspace(0.9, 0.1 * j, 6)) for j in range(4)}
    rows = [{"aggregation": "vote", "attack": "flip", "budget": 1, "trials": 4,
             "changed_within": 0, "success_beyond": 1, "beyond": 2}]
    for fig in (plots.plot_certified_accuracy(curves),
                plots.plot_certified_accuracy_panels({"p": curves}),
                plots.plot_attack(curves, rows)):  # its left panel: the clean run's curves
        styles = [line.get_linestyle() for line in fig.get_axes()[0].get_lines()]
        assert len(set(styles)) == 4, styles
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    high = {"high": (np.arange(11), np.r_[np.full(10, 0.95), 0.0])}
    fig = plots.plot_certified_accuracy(high)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    ax = fig.get_axes()[0]
    box = ax.get_legend().get_window_extent(canvas.get_renderer())
    along = np.c_[np.linspace(0, 10, 201), np.full(201, 0.95)]  # the curve's top segment
    assert not any(box.contains(x, y) for x, y in ax.transData.transform(along))


def test_delta_and_subset_size_figures_tick_whole_numbers():
    """rho, sub-dataset sizes and classifier counts are whole numbers: Figure 5 of sizes 0 to
    20 had ticks at 2.5, 7.5, ..., and ``poisoncert delta --n 1000 --ns 10 --rho-max 1`` ticks
    at 0.2, 0.4, .... The data drawn are those given."""
    def whole(axis, lim):
        return all(float(t).is_integer() for t in axis.get_ticklocs() if lim[0] <= t <= lim[1])

    sizes = np.repeat(np.arange(3, 18), np.r_[1:9, 7:0:-1])  # sizes 3 to 17
    acc = np.where(sizes > 0, 0.5 + sizes / 50, np.nan)
    fig = plots.plot_subset_sizes(sizes, acc, title="binomial")
    left, right = fig.get_axes()
    assert whole(left.xaxis, left.get_xlim()) and whole(left.yaxis, left.get_ylim())
    assert whole(right.xaxis, right.get_xlim())
    values, counts = np.unique(sizes, return_counts=True)
    np.testing.assert_array_equal([b.get_height() for b in left.patches], counts)
    np.testing.assert_array_equal(right.get_lines()[0].get_xdata(), values[values > 0])
    fig = plots.plot_delta(settings=[(1000, 10)], rho_max=1)
    ax = fig.get_axes()[0]
    assert ax.get_xlim() == (0, 1) and whole(ax.xaxis, ax.get_xlim())
    rhos, curves = plots.delta_curves(1000, 10, rho_max=1)
    for line, d in zip(ax.get_lines(), curves.values(), strict=False):
        np.testing.assert_array_equal(line.get_ydata(), d)


def test_certify_figure_title_and_legend_say_what_was_run():
    """certify's figure was titled "digits: certified accuracy (model P6)" for all ten
    classes, for digits 1 vs 7 and for a two-phase run with class 9 attackable alike, and gave
    no alpha for a probabilistic certificate. The title names the classes taken, the
    attackable classes or the clean samples, the model and alpha (probabilistic only); the
    legend says two-phase."""
    from poisoncert.config import from_dict
    from poisoncert.experiment import curve_label
    from poisoncert.experiment.certify import figure_title

    sel = {"scheme": "with_replacement", "ns": 10, "T": 50}
    binary = from_dict({"data": {"name": "digits", "classes": [1, 7]}, "selection": sel})
    assert figure_title(binary, "P6", 0.001, {"name": "digits", "class_names": ["1", "7"]}) \
        == "digits 1 vs 7: certified accuracy (model P6, alpha 0.001)"
    three = from_dict({"data": {"name": "digits", "classes": [0, 3, 8]}, "selection": sel})
    assert figure_title(three, "P3").startswith("digits classes 0, 3, 8: ")
    two = from_dict({"data": {"name": "digits", "poisoned_classes": [9]}, "selection": sel,
                     "training": {"model": "mlp", "two_phase": True}})
    assert figure_title(two, "P6", 0.01, {"name": "digits", "n_clean": 1298}) == \
        "digits, poisoned class 9: certified accuracy (model P6, alpha 0.01)"
    assert curve_label(two) == "with replacement, ns = 10, T = 50, two-phase"
    clean = from_dict({"data": {"name": "digits"}, "selection": sel})
    assert figure_title(clean, "P6", None, {"name": "digits", "n_clean": 100}) == \
        "digits, n_c = 100: certified accuracy (model P6)"  # deterministic: no alpha
    assert curve_label(clean) == "with replacement, ns = 10, T = 50"


def test_a_long_title_is_wrapped_inside_the_figure():
    """certify's 6-inch figure cut a title longer than itself at its edges ("digits, poisoned
    class 9: certified accuracy (model P6, alpha 0.001" lost its ")"). A long title is
    broken into lines at spaces and lies inside the figure, all of its words kept."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    curves = {"a": ([0, 1, 2], [0.9, 0.5, 0.0])}
    for title in ("digits, poisoned class 9: certified accuracy (model P6, alpha 0.001)",
                  "cifar10 classes 0, 1, 2, 3, 4, 5, 6, 7: certified accuracy (model P6, "
                  "alpha 0.001) " * 2, "short"):
        fig = plots.plot_certified_accuracy(curves, title=title)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        text = fig.get_axes()[0].title
        box = text.get_window_extent(canvas.get_renderer())
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1, (title, box)
        assert text.get_text().split() == title.split()
    assert text.get_text() == "short"


def test_attack_panels_share_the_zero_line_above_the_frame():
    """Attacks that changed nothing (the deterministic certificates' point) drew their line
    at 0 on the lower frame of the right panel, unseen, while the left panel's 0 lay above
    its frame: the panels' zeros at two heights. Both panels run from -0.02 to 1.02; the
    shares drawn are those of the summary rows."""
    rows = [{"aggregation": "vote", "attack": "flip", "budget": b, "trials": 4,
             "changed_within": 0, "success_beyond": s, "beyond": 2} for b, s in ((1, 0), (2, 1))]
    fig = plots.plot_attack({"vote, P3": (np.arange(4), np.array([0.9, 0.5, 0.2, 0.0]))}, rows)
    left, right = fig.get_axes()
    assert left.get_ylim() == right.get_ylim() == (-0.02, 1.02)
    changed, bound = right.get_lines()
    np.testing.assert_array_equal(changed.get_ydata(), [0.0, 0.25])
    np.testing.assert_array_equal(bound.get_ydata(), [0.5, 0.5])


@pytest.mark.parametrize(("model", "counted"), [
    ("P1", "insertions"), ("P2", "deletions"), ("P3", "modifications"),
    ("P4", "insertions, modifications"), ("P5", "deletions, modifications"),
    ("P6", "insertions, deletions, modifications")])
def test_every_rho_axis_names_the_operations_its_model_counts(model, counted):
    """Figure 2 (``delta --out``) and the report's panels said "rho (poisoned samples, model
    P6)" whatever the model, and radius_label "poisoned samples: deletions" for P2: the radius
    counts operations (docs/certificates.md: an insertion, a deletion or a modification is
    one each), and a deletion leaves no poisoned sample behind. Every axis over rho now
    names what its model counts, and stays inside its panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    want = rf"$\rho$ ({counted}; model {model})"
    assert plots.radius_label(model) == want
    curve = {"a": ([0, 1], [1.0, 0.0])}
    figs = [plots.plot_delta(settings=[(1000, 10)], model=model, rho_max=20),
            plots.plot_certified_accuracy(curve, xlabel=plots.radius_label(model)),
            plots.plot_certified_accuracy_panels({"p": curve, "q": curve, "r": curve},
                                                 xlabel=plots.radius_label(model))]
    for fig in figs:
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw_without_rendering()
        for ax in fig.get_axes():
            assert ax.get_xlabel() == want and "samples" not in ax.get_xlabel()
            label, box = ax.xaxis.label.get_window_extent(renderer), ax.get_window_extent(renderer)
            assert box.x0 - 1 <= label.x0 and label.x1 <= box.x1 + 1, (model, label, box)
    # the panels' default (the report's Figures 4 and 6) is P6's
    default = plots.plot_certified_accuracy_panels({"p": curve})
    assert default.get_axes()[0].get_xlabel() == plots.radius_label("P6")


def test_certify_figure_labels_the_radius_in_the_models_operations(tmp_path, monkeypatch):
    """``certify --model P1`` (insertions only) drew its curve over "rho (poisoned samples:
    insertions, deletions, modifications)". The x label names the operations the model's
    radius counts; certify hands the plot its curve (the one certified_accuracy.csv holds),
    its title and that label."""
    from poisoncert.config import from_dict
    from poisoncert.experiment import certify_run, train_run

    assert plots.radius_label("P1") == r"$\rho$ (insertions; model P1)"
    assert plots.radius_label("delete_modify") == r"$\rho$ (deletions, modifications; model P5)"
    assert plots.plot_certified_accuracy({"a": ([0, 1], [1, 0])}).get_axes()[0] \
        .get_xlabel() == plots.radius_label("P6")
    cfg = from_dict({"data": {"name": "digits", "classes": [1, 7], "test_limit": 40},
                     "selection": {"scheme": "knn", "k": 5}})
    train_run(cfg, tmp_path / "knn")
    seen = {}
    real = plots.plot_certified_accuracy

    def spy(curves, *a, **kw):
        seen.update(curves=curves, **kw)
        return real(curves, *a, **kw)

    monkeypatch.setattr(plots, "plot_certified_accuracy", spy)
    res = certify_run(tmp_path / "knn", model="P1")
    assert seen["xlabel"] == plots.radius_label("P1")
    assert seen["title"] == "digits 1 vs 7: certified accuracy (model P1)"  # deterministic
    (rho, acc), = seen["curves"].values()
    table = np.loadtxt(res.paths["certified_accuracy"], delimiter=",", skiprows=1, ndmin=2)
    np.testing.assert_array_equal(rho, table[:, 0])
    np.testing.assert_allclose(acc, table[:, 1], rtol=1e-5)  # the CSV's 6 digits


def test_attack_figure_title_names_the_classes_the_run_took(tmp_path, monkeypatch):
    """The attack figure of a digits 1 vs 7 run was titled "digits, with_replacement", as one
    of all ten classes. Its title names the classes (as certify's does); the clean-run curves
    handed to the plot are the judges' certified accuracy."""
    from types import SimpleNamespace

    from poisoncert.config import from_dict
    from poisoncert.experiment import attack

    seen = {}
    real = plots.plot_attack

    def spy(curves, summary, *a, **kw):
        seen.update(curves=curves, **kw)
        return real(curves, summary, *a, **kw)

    monkeypatch.setattr(plots, "plot_attack", spy)
    cfg = from_dict({"data": {"name": "digits", "classes": [1, 7]},
                     "selection": {"scheme": "with_replacement", "ns": 10, "T": 20}})
    labels = np.array([0, 1, 1, 0])
    judge = SimpleNamespace(name="vote", radius={"P1": np.array([2, 0, -1, 1])},
                            clean=np.array([0, 1, -1, 1]))  # the last one wrong
    rows = [{"aggregation": "vote", "attack": "flip", "budget": 1, "trials": 2,
             "changed_within": 0, "success_beyond": 1, "beyond": 1}]
    attack._write(tmp_path, rows, rows, {}, [judge], labels, cfg)
    assert seen["title"] == "digits 1 vs 7, with_replacement"
    (rho, acc), = seen["curves"].values()
    np.testing.assert_array_equal(rho, [0, 1, 2, 3])
    np.testing.assert_array_equal(acc, [0.5, 0.25, 0.25, 0.0])  # radii 2 and 0 correct


def test_whole_number_ticks_step_by_1_2_5_or_10_times_a_power_of_ten():
    """Figure 2's CIFAR-10 panel (n = 50,000, ns = 1000, rho to 35) ticked 0, 4, 8, ..., 32,
    its last tick short of the axis' end, and a curve to 120 ticked 0, 15, 30, ...: the
    integer locator also takes steps of 4 and 15. Ticks now step by 1, 2 or 5 times a power of
    ten, in every figure of whole numbers (the curves, Figure 2, Figure 5)."""
    def steps(axis, lim):
        ticks = [t for t in axis.get_ticklocs() if lim[0] <= t <= lim[1]]
        gaps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
        assert len(gaps) == 1, ticks
        gap = gaps.pop()
        return gap / 10 ** np.floor(np.log10(gap))

    fig = plots.plot_delta(settings=[(50000, 1000)])
    ax = fig.get_axes()[0]
    assert ax.get_xlim()[1] >= 34 and steps(ax.xaxis, ax.get_xlim()) in (1, 2, 5)
    fig = plots.plot_certified_accuracy({"a": (np.arange(121), np.linspace(1, 0, 121))})
    ax = fig.get_axes()[0]
    assert steps(ax.xaxis, ax.get_xlim()) in (1, 2, 5)
    sizes = np.arange(0, 36)
    fig = plots.plot_subset_sizes(sizes, np.full(sizes.shape, 0.9))
    for axis in (fig.get_axes()[0].xaxis, fig.get_axes()[1].xaxis):
        assert steps(axis, axis.get_view_interval()) in (1, 2, 5)


def _covered(ax, renderer) -> int:
    """Points every pixel or so along each curve as drawn (steps-post) inside the legend."""
    box = ax.get_legend().get_window_extent(renderer)
    n = 0
    for line in ax.get_lines():
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        xs, ys = np.repeat(x, 2)[1:], np.repeat(y, 2)[:-1]
        t = np.linspace(0, 1, 200)[:, None]
        seg = np.stack([xs[:-1], ys[:-1]], 1)[None] * (1 - t[..., None]) + np.stack(
            [xs[1:], ys[1:]], 1)[None] * t[..., None]
        pts = ax.transData.transform(seg.reshape(-1, 2))
        n += int(np.sum((pts[:, 0] >= box.x0) & (pts[:, 0] <= box.x1) & (pts[:, 1] >= box.y0)
                        & (pts[:, 1] <= box.y1)))
    return n


def test_panels_free_legend_covers_no_curve_inside_or_beside_the_panel():
    """legend_loc="free": inside the panel where it covers no curve (matplotlib's "best",
    which takes the least covered place when no place is free: a legend of many entries on
    curves in every corner), else beside it, the figure widened so the panels keep their
    width."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    few = {"a": (np.array([0, 8]), np.array([0.9, 0.1])), "b": (np.array([0, 1]),
                                                                 np.array([0.2, 0.0]))}
    crowded = {f"a curve with a long label to make a wide legend {j}":
               (np.arange(0, 1001, 10), np.clip(np.linspace(0.95, -0.5 + 0.1 * j, 101), 0, 1))
               for j in range(10)}
    crowded["flat"] = (np.arange(0, 1001, 10), np.full(101, 0.05))
    for panels, beside in (({"few": few}, False), ({"crowded": crowded, "few": few}, True)):
        plain = plots.plot_certified_accuracy_panels(panels, ncols=2)
        fig = plots.plot_certified_accuracy_panels(panels, ncols=2, legend_loc="free")
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        for ax in fig.get_axes()[:len(panels)]:
            assert _covered(ax, renderer) == 0, ax.get_title()
        first = fig.get_axes()[0]
        out = first.get_legend().get_window_extent(renderer).x0 >= first.get_window_extent(
            renderer).x1
        assert bool(out) is beside
        assert bool(fig.get_figwidth() > plain.get_figwidth()) is beside
        FigureCanvasAgg(plain).draw()
        width = first.get_window_extent(renderer).width
        assert width >= 0.95 * plain.get_axes()[0].get_window_extent().width
    # the old placements as they were
    fig = plots.plot_certified_accuracy_panels({"few": few})
    assert fig.get_axes()[0].get_legend()._loc == 3
