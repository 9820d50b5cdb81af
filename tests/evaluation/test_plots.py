"""Each plot function writes one non-empty PNG, atomically."""

import numpy as np
import pytest

from evaluation import metrics, plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the temp file was renamed, not left behind


def test_plot_fde_vs_horizon(tmp_path):
    path = tmp_path / "deep" / "fde.png"
    written = plots.plot_fde_vs_horizon(
        [1, 2, 3], {"model": [0.5, 1.1, 2.0], "constant velocity": [0.7, 1.6, 3.1]}, path
    )
    assert written == path
    _assert_png(path)


def test_plot_fde_vs_horizon_refuses_a_curve_of_the_wrong_length(tmp_path):
    with pytest.raises(ValueError, match="curve 'model' has 2 values"):
        plots.plot_fde_vs_horizon([1, 2, 3], {"model": [0.5, 1.1]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_reliability_single_and_named(tmp_path):
    rng = np.random.default_rng(0)
    prob = rng.uniform(size=500)
    label = (rng.uniform(size=500) < prob).astype(float)
    bins = metrics.reliability_bins(prob, label)
    _assert_png(plots.plot_reliability(bins, tmp_path / "one.png"))
    other = metrics.reliability_bins(prob**2, label)
    _assert_png(plots.plot_reliability({"model": bins, "ttc": other}, tmp_path / "two.png"))


def test_plot_risk_histograms(tmp_path):
    rng = np.random.default_rng(1)
    label = rng.integers(0, 2, size=(40, 5))
    prob = np.clip(0.3 * label + rng.uniform(size=label.shape) * 0.7, 0, 1)
    _assert_png(plots.plot_risk_histograms(prob, label, tmp_path / "risk.png"))


def test_plot_forecast_scene(tmp_path):
    rng = np.random.default_rng(2)
    hist = np.zeros((4, 3, 7))  # (H, N, D)
    hist[..., 0] = np.arange(-3, 1)[:, None] * 25.0 + np.array([0.0, 20.0, -15.0])
    hist[..., 1] = np.array([0.0, 4.0, 0.0])
    hist_mask = np.ones((4, 3), bool)
    hist_mask[:2, 2] = False
    future = np.zeros((5, 3, 4))  # (F, N, 4)
    future[..., 0] = np.arange(1, 6)[:, None] * 25.0 + np.array([0.0, 20.0, -15.0])
    future[..., 1] = hist[-1, :, 1]
    future_mask = np.ones((5, 3), bool)
    future_mask[3:, 1] = False
    samples = future[None, ..., :2] + rng.normal(size=(6, 5, 3, 2))  # (S, F, N, 2)
    path = plots.plot_forecast_scene(
        hist,
        hist_mask,
        future,
        future_mask,
        samples,
        tmp_path / "scene.png",
        title="episode 0, t0 = 12 s",
    )
    _assert_png(path)
    _assert_png(
        plots.plot_forecast_scene(
            hist, hist_mask, future, future_mask, None, tmp_path / "no_samples.png"
        )
    )


def test_plot_learning_curve_with_gaps_and_references(tmp_path):
    curves = {"collision rate": [0.4, 0.3, 0.2], "surprise": [float("nan"), 1.0, 0.8],
              "dataset steps": [100, 150, 200]}
    path = plots.plot_learning_curve([0, 1, 2], curves, tmp_path / "curve.png",
                                     references={"collision rate": {"rule": 0.05}},
                                     log_curves={"collision rate"})
    _assert_png(path)
    with pytest.raises(ValueError, match="curve 'surprise' has 2 values but there are 3"):
        plots.plot_learning_curve([0, 1, 2], {"surprise": [1.0, 0.8]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_uncertainty_vs_error(tmp_path):
    rng = np.random.default_rng(0)
    error = rng.uniform(0, 3, 50)
    error[3] = np.nan  # a window without a scored neighbour is left out
    scores = {"epistemic": rng.uniform(size=50), "aleatoric": error + rng.normal(size=50) * 0.1}
    path = plots.plot_uncertainty_vs_error(scores, error, tmp_path / "u.png")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="shape"):
        plots.plot_uncertainty_vs_error({"short": np.ones(3)}, error, tmp_path / "v.png")
