"""plotting: save_fig writes valid PDF + PNG atomically and closes the figure; save_table writes CSV."""

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vaccine_lib import plotting as pl  # noqa: E402


def _grid():
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"defense": d, "p": p, "seed": s, "hs": rng.uniform(0, 100), "fa": rng.uniform(0, 100)}
                         for d in ("SFT", "Vaccine", "NA") for p in (0.0, 0.1, 0.3) for s in (1, 2)])


def test_save_fig_writes_pdf_and_png_and_closes(tmp_path):
    fig = pl.lines(_grid(), "p", ["hs", "fa"])
    paths = pl.save_fig(fig, "hs_vs_p", tmp_path, show=False)
    assert [p.name for p in paths] == ["hs_vs_p.pdf", "hs_vs_p.png"]
    assert (tmp_path / "hs_vs_p.pdf").read_bytes()[:5] == b"%PDF-"
    assert (tmp_path / "hs_vs_p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_save_fig_is_deterministic(tmp_path):
    a = pl.save_fig(pl.lines(_grid(), "p", ["hs", "fa"]), "a", tmp_path, show=False)
    b = pl.save_fig(pl.lines(_grid(), "p", ["hs", "fa"]), "b", tmp_path, show=False)
    assert a[0].read_bytes() == b[0].read_bytes()  # no timestamps in the PDF


def test_save_table_roundtrip(tmp_path):
    df = _grid()
    path = pl.save_table(df, "t", tmp_path / "tables")
    back = pd.read_csv(path)
    assert list(back.columns) == list(df.columns) and len(back) == len(df)


def test_helpers_build_figures(tmp_path):
    hist = {"SFT": [{"step": i, "loss": 1 / (i + 1)} for i in range(5)],
            "Vaccine": [{"step": i, "loss": 2 / (i + 1), "vaccine/eps_norm": 2.0} for i in range(5)]}
    figs = [
        pl.training_curves(hist, keys=["loss", "vaccine/eps_norm"]),
        pl.lines(pd.DataFrame({"defense": ["SFT"] * 3, "step": [0, 1, 2], "drift": [0, 1, 2],
                               "align_loss": [1, 2, 3]}), "step", ["drift", "align_loss"]),
        pl.scatter_2d(pd.DataFrame({"x": [0, 1, 2, 3], "y": [1, 0, 1, 0], "model": ["a", "a", "b", "b"]})),
        pl.bars(pd.DataFrame({"method": ["SFT", "Vaccine"], "step_s": [1.0, 2.0]}), "method", ["step_s"]),
        pl.heat_table(pd.DataFrame({"0.1": [1.0, 2.0]}, index=["SFT", "Vaccine"])),
    ]
    for i, fig in enumerate(figs):
        pl.save_fig(fig, f"f{i}", tmp_path, formats=("png",), show=False)
    assert len(list(tmp_path.glob("*.png"))) == len(figs)


def test_defense_colours_are_fixed():
    a, b = pl.palette(["Vaccine", "SFT"]), pl.palette(["SFT", "other"])
    assert a["SFT"] == b["SFT"] and a["Vaccine"] != a["SFT"]


def test_mean_sd():
    out = pl.mean_sd(_grid(), ["defense", "p"], ["hs"])
    assert {"hs", "hs_sd"} <= set(out.columns) and len(out) == 9


def test_claims_forest_has_a_legend_entry_and_a_marker_per_judge():
    rows = pd.DataFrame([{"claim": c, "judge": j, "effect": e, "ci_lo": e - 2, "ci_hi": e + 2, "paper_effect": -7.0}
                         for c, e in (("C2a", -5.0), ("C1a", 10.0)) for j in ("classifier", "probe", "ensemble")])
    fig = pl.claims_forest(rows)
    ax = fig.axes[0]
    labels = ax.get_legend().get_texts()
    assert {t.get_text() for t in labels} == {"classifier", "probe", "ensemble", "paper"}
    markers = {line.get_marker() for line in ax.get_lines() if line.get_marker() not in ("None", "x", "|", "_", None)}
    assert len(markers) == 3  # classifier / ensemble / probe differ in shape, not only in colour
    assert len(ax.get_yticks()) == len(rows)
    plt.close(fig)


def test_lines_break_where_a_group_was_not_run():
    """Vaccine measured at p = 0 and 0.3 only: no interpolated segment across p = 0.1 (a NaN gap in its line)."""
    import math

    import pandas as pd

    df = pd.DataFrame([{"defense": d, "p": p, "seed": s, "hs": 10 * p + s}
                       for d, ps in (("SFT", (0.0, 0.1, 0.3)), ("Vaccine", (0.0, 0.3))) for p in ps for s in (0, 1)])
    fig = pl.lines(df, "p", ["hs"])
    by_label = {c.get_label(): c.lines[0] for c in fig.axes[0].containers}  # one errorbar container per group
    vac = by_label["Vaccine"].get_ydata()
    assert len(by_label["Vaccine"].get_xdata()) == 3 and math.isnan(vac[1])
    assert not any(math.isnan(v) for v in by_label["SFT"].get_ydata())
    assert vac[0] == 0.5 and abs(vac[2] - 3.5) < 1e-9  # the mean over seeds
