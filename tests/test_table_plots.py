"""Table figures that do not mislead: paper and ours on their own labelled scales, the delta
panel equal to the table's deltas with the verdicts' noise band, legends off the data."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from test_tables import SPEC, fake_costs, fake_runs  # noqa: E402

from rtinst.harness import tables  # noqa: E402
from rtinst.harness.specs import load_spec  # noqa: E402
from rtinst.viz.table_plots import delta_noise, plot_figure1, plot_table  # noqa: E402


@pytest.fixture()
def spec(tmp_path):
    path = tmp_path / "t6a.yaml"
    path.write_text(SPEC)
    return load_spec(path, presets=("tiny",))


@pytest.fixture()
def table(spec):
    return tables.build_table(spec, fake_runs(), fake_costs(), preset="tiny")


def _by_title(fig, start):
    hits = [ax for ax in fig.axes if ax.get_title().startswith(start)]
    assert len(hits) == 1, [ax.get_title() for ax in fig.axes]
    return hits[0]


def _line_y(ax, label):
    for c in ax.containers:  # errorbar: its data line is the container's first line
        if c.get_label() == label:
            return c.lines[0].get_xdata(), c.lines[0].get_ydata()
    raise AssertionError(f"no series {label!r}: {[c.get_label() for c in ax.containers]}")


def test_paper_and_ours_on_separate_labelled_axes(spec, table):
    fig = plot_table(spec, table, "tiny")
    paper, ours = _by_title(fig, "A. paper ap"), _by_title(fig, "B. ours ap")
    assert "COCO" in paper.get_title() and "tiny, this 2-core CPU" in ours.get_title()
    assert paper.get_ylabel() == "paper ap" and ours.get_ylabel() == "ours ap (tiny)"
    # no twin axes: every panel has its own position in the grid
    positions = [tuple(np.round(ax.get_position().bounds, 3)) for ax in fig.axes if ax.axison]
    assert len(positions) == len(set(positions))
    # each panel shows its own numbers, sorted by x (decoder_layers 0, 1, 3)
    x, y = _line_y(ours, "ours")
    assert list(x) == [0, 1, 3] and list(y) == pytest.approx([11.0, 22.0, 23.0])
    x, y = _line_y(paper, "paper")
    t = table.set_index("row")
    assert list(y) == pytest.approx([t.loc[r, "paper_ap"] for r in ("D=0", "D=1", "D=3")])


def test_delta_panel_equals_table_deltas_with_verdict_noise(spec, table):
    fig = plot_table(spec, table, "tiny")
    delta = _by_title(fig, "C. ap vs baseline: paper and ours, one axis\nbaseline: D=3")
    t = table[table["implemented"]].set_index("row")
    rows = ["D=0", "D=1", "D=3"]
    _, ours = _line_y(delta, "ours")
    _, paper = _line_y(delta, "paper")
    assert list(ours) == pytest.approx([t.loc[r, "ours_ap_vs_base"] for r in rows])
    assert list(paper) == pytest.approx([t.loc[r, "paper_ap_vs_base"] for r in rows])
    # the band is the noise judge_claims uses for "row vs baseline": seed stds in quadrature
    claims = tables.judge_claims(spec, table, "tiny").set_index("claim")
    noise = delta_noise(spec, table[table["implemented"]].reset_index(drop=True), "ap")
    assert noise.iloc[1] == pytest.approx(claims.loc["D3 > D1", "noise"])
    band = delta.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() == pytest.approx(noise.max())


def test_one_seed_band_is_the_fixed_tolerance(spec):
    one = fake_runs()
    t = tables.build_table(spec, one[one["seed"] == 0], fake_costs(), "tiny")
    assert list(delta_noise(spec, t, "ap").dropna()) == [spec.tolerance] * len(t)


def _data_points_display(fig):
    pts = []
    for ax in fig.axes:
        for line in ax.get_lines():
            xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
            xy = xy[np.isfinite(xy).all(axis=1)]
            if len(xy):
                pts.append(ax.transData.transform(xy))
        for coll in ax.collections:
            off = coll.get_offsets()
            if len(off):
                pts.append(ax.transData.transform(np.asarray(off, float)))
    return np.vstack(pts)


@pytest.mark.parametrize("kind", ["line", "bar"])
def test_legend_outside_every_axes_and_off_every_point(spec, table, kind):
    if kind == "bar":
        spec.plot = {"kind": "bar", "metrics": ["ap"]}
    fig = plot_table(spec, table, "tiny")
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        if ax.axison:
            assert not legend.overlaps(ax.get_window_extent()), ax.get_title()
    pts = _data_points_display(fig)
    inside = ((pts[:, 0] >= legend.x0) & (pts[:, 0] <= legend.x1)
              & (pts[:, 1] >= legend.y0) & (pts[:, 1] <= legend.y1))
    assert not inside.any()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == len(set(labels)) and "paper" in labels and "ours" in labels


def test_figure1_two_scales_legend_and_labels_apart(table):
    t = table.copy()
    t["implemented"] = t["implemented"].astype(str)
    t["ours_gflops"] = [50.0, 50.5, 51.0, np.nan]  # close points: labels must be moved apart
    fig = plot_figure1({"fastinst/table1_testdev": (t, pd.DataFrame())}, "tiny")
    fig.canvas.draw()
    paper, ours = fig.axes[0], fig.axes[1]
    assert paper.get_ylabel().startswith("paper ap (COCO") and "tiny, this 2-core CPU" in ours.get_ylabel()
    assert fig.legends and not fig.legends[0].get_window_extent().overlaps(paper.get_window_extent())
    for ax in (paper, ours):
        boxes = [txt.get_window_extent() for txt in ax.texts]
        assert len(boxes) == 3
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), [txt.get_text() for txt in ax.texts]


def test_no_noise_band_where_ours_is_missing(spec, table):
    spec.plot = {"kind": "bar", "metrics": ["ap"]}  # bars keep the unimplemented row D=6
    fig = plot_table(spec, table, "tiny")
    delta = _by_title(fig, "C. ap vs baseline: paper and ours, one axis\nbaseline: D=3")
    heights = {}
    for container in delta.containers:
        if container.get_label().startswith("ours: +-"):
            heights = dict(zip(table["row"], [r.get_height() for r in container.patches]))
    assert heights["D=1"] > 0 and np.isnan(heights["D=6"])
