"""The benchmarks' plots: series named as a reader says them, a colour and a marker of their own,
legends outside the axes, and the committed figures redrawn from the committed CSV files alone."""
import shutil
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import _plots  # noqa: E402
import replot  # noqa: E402

pytest.importorskip("matplotlib")


@pytest.mark.parametrize("label,name", [
    ("vanilla", "vanilla (no regularization)"),
    ("unbiased@0.3", "local, unbiased, weight 0.3"),
    ("biased@1", "local, biased, weight 1"),
    ("unbiased_stiff@0.1", "local, unbiased + stiffness, weight 0.1"),
    ("const@0.1", "local, unbiased, weight 0.1"),
    ("budget@0.6", "NFEBudget 0.6x"),
    ("budget", "NFEBudget"),
    ("budget_sum", "NFEBudget, plain sum"),
    ("budget_rows32", "NFEBudget, reg_batch_size 32"),
    ("auto", "AutoWeight"),
    ("auto@0.3", "AutoWeight()"),
    ("auto_eps@0.3", "AutoWeight(), shares 1e-6 larger (a noise reference)"),
    ("auto_c@0.1", "AutoWeight, share c=0.1"),
    ("auto_cost@0.3", "AutoWeight(), conflict factor on SDE solves too"),
    ("auto_noconf@0.3", "AutoWeight(), no conflict factor (the default until 2026-12-05)"),
    ("auto_nocap@0.1", "AutoWeight, no cap c=0.1"),
    ("global@0.1", "global, weight 0.1"),
    ("steer@0.5", "STEER b=0.5"),
    ("rnode@0.01", "RNODE 0.01"),
    ("something_new@3", "something_new@3"),
])
def test_display_name(label, name):
    assert _plots.display_name(label) == name


def test_styles_are_distinct_and_stable():
    labels = ["vanilla"] + [f"unbiased@{w}" for w in range(10)] + [f"biased@{w}" for w in range(10)] + \
        ["budget@0.6", "auto", "global@0.1", "steer@0.5", "rnode@0.01"]
    look = _plots.styles(reversed(labels))
    assert look["vanilla"] == {"color": "#000000", "marker": "s"}
    others = [look[k] for k in _plots.ordered(labels) if k != "vanilla"]
    pairs = {(s["color"], s["marker"]) for s in others}
    assert len(pairs) == len(others) == 25                       # no two series look alike
    assert len({s["color"] for s in others[:len(_plots.PALETTE)]}) == len(_plots.PALETTE)   # no colour repeats
    assert len({s["marker"] for s in others[:len(_plots.MARKER_CYCLE)]}) == len(_plots.MARKER_CYCLE)
    assert "#000000" not in {s["color"] for s in others}
    assert look["auto"] == _plots.AUTO_STYLE                      # AutoWeight() looks the same in every figure
    rest = [look[k] for k in labels if k not in ("vanilla", "auto")]
    assert _plots.AUTO_STYLE["color"] not in {s["color"] for s in rest}
    assert _plots.AUTO_STYLE["marker"] not in {s["marker"] for s in rest}
    assert _plots.styles(labels) == look                          # the order given does not matter
    assert _plots.ordered(labels)[:3] == ["vanilla", "unbiased@0", "unbiased@1"]


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _summary(n):
    rows = [{"label": "vanilla", "method": "vanilla", "metric_name": "accuracy", "test_nfe_mean": 44.0,
             "test_nfe_std": 1.0, "test_metric_mean": 0.96, "test_metric_std": 0.002}]
    rows += [{"label": f"unbiased@{w}", "method": "unbiased", "metric_name": "accuracy", "test_nfe_mean": 20.0 + w,
              "test_nfe_std": "nan", "test_metric_mean": 0.95, "test_metric_std": ""} for w in range(n)]
    return rows


def test_pareto_legend_is_outside_the_data(tmp_path, monkeypatch):
    plt = _plots.pyplot()
    figures = []
    monkeypatch.setattr(_plots, "_save", lambda plt_, fig, path: figures.append(fig) or path)
    _plots.pareto(_summary(16), tmp_path / "p.png", title="t")
    (fig,) = figures
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()][:2] == ["vanilla (no regularization)",
                                                            "local, unbiased, weight 0"]
    for ax in fig.axes:
        assert not _overlaps(legend.get_window_extent(renderer), ax.get_window_extent(renderer))
    assert fig.axes[0].get_ylabel().startswith("test accuracy (%)") and "NFE" in fig.axes[0].get_xlabel()
    plt.close(fig)


def test_pareto_ticks_read_as_values_when_the_metrics_are_close(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(_plots, "_save", lambda plt_, fig, path: figures.append(fig) or path)
    rows = _summary(2)
    rows[1]["test_metric_mean"], rows[2]["test_metric_mean"], rows[0]["test_metric_mean"] = 0.99998, 0.99999, 1.0
    for row in rows:
        row["test_metric_std"] = 0.0  # every seed at the same accuracy (disk vs ring): a range of 0.002 points
    _plots.pareto(rows, tmp_path / "p.png", title="t")
    (fig,) = figures
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.yaxis.get_offset_text().get_text() == ""  # no "+9.999e1" above the axis
    assert all(float(t.get_text().replace("\u2212", "-")) > 99 for t in ax.get_yticklabels() if t.get_text())
    _plots.pyplot().close(fig)


def test_training_nfe_panels_by_family_with_vanilla_in_each(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(_plots, "_save", lambda plt_, fig, path: figures.append(fig) or path)
    curves = [{"label": label, "itr": i, "nfe_forward": 20 + i} for label in
              ("vanilla", "unbiased@0.1", "unbiased@1", "biased@1", "budget@0.6", "rnode@0.01") for i in range(1, 30)]
    _plots.training_nfe(curves, tmp_path / "n.png", title="t")
    (fig,) = figures
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["local, unbiased", "local, biased", "NFEBudget", "RNODE"]
    for ax in visible:
        names = [t.get_text() for t in ax.get_legend().get_texts()]
        assert names[0] == "vanilla (no regularization)" and len(names) >= 2
        assert ax.get_xlabel() == "training iteration"
    # The panels share their y axis: its label is on the left of each row only.
    assert ["NFE" in ax.get_ylabel() for ax in visible] == [True, False, False, True]
    _plots.pyplot().close(fig)


def test_training_nfe_splits_a_crowded_family_and_keeps_autoweight_in_each_panel(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(_plots, "_save", lambda plt_, fig, path: figures.append(fig) or path)
    candidates = [f"auto_c@{c}" for c in (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0)]
    curves = [{"label": label, "itr": i, "nfe_forward": 20 + i} for label in ("vanilla", "auto@0.3", *candidates)
              for i in range(1, 30)]
    _plots.training_nfe(curves, tmp_path / "n.png", title="t")
    (fig,) = figures
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["AutoWeight (1/2)", "AutoWeight (2/2)"]
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in visible]
    for names in legends:
        assert names[:2] == ["vanilla (no regularization)", "AutoWeight()"] and len(names) - 1 <= _plots.PANEL_LINES
    drawn = [name for names in legends for name in names[2:]]
    assert sorted(drawn) == sorted(_plots.display_name(c) for c in candidates)   # each candidate once
    _plots.pyplot().close(fig)


@pytest.mark.parametrize("labels", [(*(f"unbiased@{w}" for w in (0.003, 0.01, 0.015, 0.02, 0.03, 0.1, 0.3)),
                                     "budget@0.6", "auto_prev@0.1", "auto@0.05"),
                                    ("unbiased@0.1", "biased@1", "budget@0.6", "rnode@0.01")])
def test_training_nfe_panels_do_not_overlap(tmp_path, monkeypatch, labels):
    """No panel's labels run into its neighbour, at least 6 points apart: one row of three panels
    with a long legend (as MNIST SDE's 200-step runs have), and two rows."""
    figures = []
    monkeypatch.setattr(_plots, "_save", lambda plt_, fig, path: figures.append(fig) or path)
    curves = [{"label": label, "itr": i, "nfe_forward": 4 + i / 3.7} for label in ("vanilla", *labels)
              for i in range(1, 30)]
    _plots.training_nfe(curves, tmp_path / "n.png", title="t")
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    visible = [ax for ax in fig.axes if ax.get_visible()]
    for left, right in zip(visible, visible[1:]):
        if abs(left.get_position().y0 - right.get_position().y0) < 1e-9:   # the same row
            gap_points = (right.get_tightbbox(renderer).x0 - left.get_tightbbox(renderer).x1) / fig.dpi * 72
            assert gap_points >= 6
    _plots.pyplot().close(fig)


@pytest.mark.parametrize("folder", ["mnist_node", "spiral_sde_short"])
def test_replot_from_the_committed_csv_files(tmp_path, folder):
    """The figures of a committed results folder come back from its CSV files and summary.md alone."""
    out = tmp_path / folder
    out.mkdir()
    for name in ("summary.csv", "curves.csv", "summary.md"):
        shutil.copy(BENCHMARKS / "results" / folder / name, out / name)
    written = replot.main([str(out)])
    assert sorted(p.name for p in written) == ["nfe_training.png", "pareto.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replot_default_folders_leave_out_weight_control():
    folders = [p.name for p in replot.default_folders()]
    assert "mnist_node" in folders and not any(f.startswith("weight_control") for f in folders)


def test_experiment_plots_move_a_crowd_of_candidates_to_their_own_figure(tmp_path, monkeypatch):
    saved = {}
    monkeypatch.setattr(_plots, "_save", lambda plt_, fig, path: saved.setdefault(Path(path).name, fig) and path)
    candidates = [f"auto_c@{c}" for c in (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0)] + ["auto_eps@0.3"]
    rows = _summary(6) + [{"label": label, "method": label.split("@")[0], "metric_name": "accuracy",
                           "test_nfe_mean": 30.0 + k, "test_nfe_std": 1.0, "test_metric_mean": 0.95,
                           "test_metric_std": 0.01} for k, label in enumerate(["auto@0.3", "budget@0.6", *candidates])]
    assert len(rows) > _plots.PARETO_SERIES
    _plots.experiment_plots(tmp_path, rows, [], "t")
    assert set(saved) == {"pareto.png", "pareto_candidates.png"}
    (main_legend,) = saved["pareto.png"].legends
    main_names = [t.get_text() for t in main_legend.get_texts()]
    assert "AutoWeight()" in main_names and "NFEBudget 0.6x" in main_names and len(main_names) == 9
    assert not any(name.startswith("AutoWeight,") or "1e-6" in name for name in main_names)
    panels = [ax for ax in saved["pareto_candidates.png"].axes if ax.get_visible()]
    assert len(panels) == 2 and all(ax.get_title().startswith("AutoWeight (") for ax in panels)
    drawn = []
    for ax in panels:
        names = [t.get_text() for t in ax.get_legend().get_texts()]
        assert names[:2] == ["vanilla (no regularization)", "AutoWeight()"]
        assert len(names) - 1 <= _plots.PANEL_LINES
        drawn += names[2:]
    assert sorted(drawn) == sorted(_plots.display_name(c) for c in candidates)   # each candidate once
    for fig in saved.values():
        _plots.pyplot().close(fig)


def test_experiment_plots_keep_a_small_folder_in_one_figure(tmp_path, monkeypatch):
    saved = {}
    monkeypatch.setattr(_plots, "_save", lambda plt_, fig, path: saved.setdefault(Path(path).name, fig) and path)
    rows = _summary(3) + [{"label": "auto_c@0.1", "method": "auto_c", "metric_name": "accuracy", "test_nfe_mean": 30.0,
                           "test_nfe_std": 1.0, "test_metric_mean": 0.95, "test_metric_std": 0.01}]
    _plots.experiment_plots(tmp_path, rows, [], "t")
    assert set(saved) == {"pareto.png"}
    (legend,) = saved["pareto.png"].legends
    assert "AutoWeight, share c=0.1" in [t.get_text() for t in legend.get_texts()]
    _plots.pyplot().close(saved["pareto.png"])


def test_pareto_rejects_an_unknown_legend_mode(tmp_path):
    with pytest.raises(ValueError, match="legend must be"):
        _plots.pareto(_summary(2), tmp_path / "p.png", legend="below")
