"""Golden cases for evaluation.calibration: prediction-region coverage, the variance scale,
and the window-level uncertainty scores that rank errors and flag shifted inputs."""

import numpy as np
import pytest
from scipy import stats

from evaluation import calibration as c


def test_region_radius_is_the_two_dof_chi_square_quantile():
    for p in (0.5, 0.9, 0.99):
        assert c.region_radius2(p) == pytest.approx(stats.chi2.ppf(p, df=2))
    with pytest.raises(ValueError, match="probability"):
        c.region_radius2(1.0)


def hand_built(radius2: list[float], std: float = 1.0):
    """One window, one step, one vehicle per entry of `radius2`: the true position lies at
    squared Mahalanobis radius r2 from the mean (split over x and y), std `std` on both."""
    r2 = np.asarray(radius2, dtype=float)
    n = len(r2)
    mean = np.zeros((1, 1, n, 4))
    mean[..., 0] = 3.0  # the truth sits off a mean that is not at the origin
    target = mean.copy()
    target[0, 0, :, 0] += std * np.sqrt(r2 / 2)
    target[0, 0, :, 1] -= std * np.sqrt(r2 / 2)
    return mean, np.full_like(mean, std), target


def test_coverage_counts_the_true_positions_inside_each_region():
    r2 = [0.5, 1.0, 1.3, 2.0, 3.0, 4.0, 4.5, 5.0, 6.0, 10.0]  # r2(50%) 1.386, r2(90%) 4.605
    for std in (1.0, 2.5):
        mean, sd, target = hand_built(r2, std)
        m2 = c.mahalanobis2(mean, sd, target)
        np.testing.assert_allclose(m2[0, 0], r2)
        mask = np.ones(m2.shape, bool)
        assert c.coverage_by_horizon(m2, mask, [1], 1.0, 0.5)[0] == pytest.approx(0.3)
        assert c.coverage_by_horizon(m2, mask, [1], 1.0, 0.9)[0] == pytest.approx(0.7)
    mask[0, 0, -3:] = False  # the three farthest are not scored
    assert c.coverage_by_horizon(m2, mask, [1], 1.0, 0.9)[0] == pytest.approx(1.0)
    # doubling the variance brings r2 = 6.0 and 5.0 (halved: 3.0, 2.5) inside the 90% ellipse
    mask[:] = True
    assert c.coverage_by_horizon(m2, mask, [1], 1.0, 0.9, scale=[2.0])[0] == pytest.approx(0.9)


def test_coverage_of_draws_from_the_predicted_gaussian_is_its_probability():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(4000, 2, 3, 4)) * 10
    std = rng.uniform(0.2, 3.0, size=mean.shape)  # anisotropic, per vehicle and step
    target = mean + std * rng.normal(size=mean.shape)
    m2 = c.mahalanobis2(mean, std, target)
    mask = np.ones(m2.shape, bool)
    for p in (0.5, 0.9):
        np.testing.assert_allclose(c.coverage_by_horizon(m2, mask, [1, 2], 1.0, p), p, atol=0.01)


def test_the_fitted_scale_makes_the_90_region_cover_90_percent():
    rng = np.random.default_rng(1)
    mean = np.zeros((3000, 3, 2, 4))
    true_std = np.array([0.5, 1.0, 2.0])[None, :, None, None]  # per step; predicted: 1
    target = mean + true_std * rng.normal(size=mean.shape)
    m2 = c.mahalanobis2(mean, np.ones_like(mean), target)
    mask = np.ones(m2.shape, bool)
    scale = c.fit_variance_scale(m2, mask)
    np.testing.assert_allclose(scale, [0.25, 1.0, 4.0], rtol=0.1)
    raw = c.coverage_by_horizon(m2, mask, [1, 2, 3], 1.0, 0.9)
    assert raw[0] > 0.99 and raw[2] < 0.5
    np.testing.assert_allclose(c.coverage_by_horizon(m2, mask, [1, 2, 3], 1.0, 0.9, scale),
                               0.9, atol=0.002)
    mask[:, 1] = False  # a step with no valid position keeps its variance
    assert c.fit_variance_scale(m2, mask)[1] == 1.0


def test_calibration_changes_nothing_but_the_spread():
    rng = np.random.default_rng(2)
    pred = {"states": rng.normal(size=(5, 3, 4, 4)),
            "states_std": rng.uniform(0.5, 2.0, size=(5, 3, 4, 4)),
            "samples": rng.normal(size=(2, 5, 3, 4, 2)), "uncertainty": rng.uniform(size=(5, 3)),
            "collision": rng.uniform(size=(5, 3))}
    before = {k: v.copy() for k, v in pred.items()}
    scale = np.array([0.5, 1.0, 4.0])
    out = c.calibrate(pred, scale)
    for key in ("states", "samples", "uncertainty", "collision"):
        np.testing.assert_array_equal(out[key], before[key])  # the means never move
    np.testing.assert_array_equal(out["states_std"][..., 2:], before["states_std"][..., 2:])
    np.testing.assert_allclose(out["states_std"][..., :2],
                               before["states_std"][..., :2] * np.sqrt(scale)[:, None, None])
    np.testing.assert_array_equal(pred["states_std"], before["states_std"])  # input untouched


def windows(b: int, seed: int, swerve: float = 0.0) -> dict[str, np.ndarray]:
    """`b` ego-centric windows (H=5 frames of 0.2 s, N=4 slots, F=3): neighbours at constant
    velocity, or with `swerve` their lateral position jumping by up to that many metres per
    frame while their velocities say they drive straight."""
    rng = np.random.default_rng(seed)
    h, n, f = 5, 4, 3
    t = (np.arange(h) - (h - 1)) * 0.2
    x0, y0 = rng.uniform(-40, 40, (b, n)), rng.choice([-4.0, 0.0, 4.0], (b, n))
    vx = rng.uniform(20, 30, (b, n))
    x0[:, 0] = y0[:, 0] = 0.0
    hist = np.zeros((b, h, n, 4))
    hist[..., 0] = x0[:, None] + (vx[:, None] - 25.0) * t[None, :, None]
    hist[..., 1] = y0[:, None] + swerve * rng.uniform(-1, 1, (b, h, n))
    hist[..., 2] = vx[:, None] - 25.0  # relative to the ego
    ones = np.ones((b, f, n), bool)
    return {"hist": hist, "hist_mask": np.ones((b, h, n), bool), "step_mask": ones[..., 0],
            "future": np.zeros((b, f, n, 4)), "future_mask": ones}


def test_history_surprise_is_zero_at_constant_velocity_and_grows_with_swerves():
    calm, swerving = windows(40, seed=3), windows(40, seed=4, swerve=1.0)
    near = np.ones((40, 4), bool)
    np.testing.assert_allclose(c.history_surprise(calm["hist"], calm["hist_mask"], near), 0.0,
                               atol=1e-9)
    assert (c.history_surprise(swerving["hist"], swerving["hist_mask"], near) > 0.1).all()


def pred_for(a: dict[str, np.ndarray], std: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    b, f, n = a["future_mask"].shape
    return {"states": np.zeros((b, f, n, 4)),
            "states_std": std * rng.uniform(0.8, 1.2, (b, f, n, 4)),
            "uncertainty": rng.uniform(0, 0.01, (b, f))}


def test_off_distribution_windows_raise_the_ood_scores():
    """Shifted inputs (swerving neighbours, forecast with a wider spread) score above the
    in-distribution windows; the same distribution gives an AUROC near one half."""
    calm, again, swerving = windows(60, 5), windows(60, 6), windows(60, 7, swerve=1.0)
    scores = {name: c.window_scores(pred_for(a, std, i), a)
              for i, (name, a, std) in enumerate((("calm", calm, 1.0), ("again", again, 1.0),
                                                  ("swerving", swerving, 2.0)))}
    for score in ("aleatoric", "aleatoric_near", "surprise"):
        assert c.ood_auroc(scores["calm"][score], scores["swerving"][score]) > 0.95, score
    assert 0.3 < c.ood_auroc(scores["calm"]["aleatoric"], scores["again"]["aleatoric"]) < 0.7
    assert c.ood_auroc(scores["swerving"]["surprise"], scores["calm"]["surprise"]) < 0.05
    assert np.isnan(c.ood_auroc([], [1.0]))


def test_spearman_of_each_score_against_the_window_error():
    error = np.arange(10.0)
    out = c.score_spearmans({"good": error * 2, "bad": -error, "broken": np.full(10, np.nan)},
                            error)
    assert out["good_error_spearman"] == pytest.approx(1.0)
    assert out["bad_error_spearman"] == pytest.approx(-1.0)
    assert np.isnan(out["broken_error_spearman"])


def test_window_features_read_the_history_period_and_the_neighbours():
    a = windows(30, seed=8)
    features = dict(zip(c.WINDOW_FEATURES, c.window_features(a).T, strict=True))
    np.testing.assert_allclose(features["frame_period"], 0.2, rtol=1e-6)  # 5 frames a second
    np.testing.assert_array_equal(features["neighbours"], 3)
    np.testing.assert_allclose(features["surprise"], 0.0, atol=1e-9)
    alone = windows(2, seed=9)
    alone["hist_mask"][:, :, 1:] = False
    assert np.isnan(c.window_features(alone)[:, 1]).all()  # no nearest neighbour


def test_input_distance_flags_windows_unlike_the_fitted_ones():
    """Fitted on calm windows, the feature density gives held-out calm windows distances
    like its own and swerving or 15 Hz windows (frames of 1/15 s) far larger ones."""
    density = c.fit_feature_density(c.window_features(windows(80, seed=10)))
    calm = c.feature_distance(density, c.window_features(windows(60, seed=11)))
    swerving = c.feature_distance(density, c.window_features(windows(60, 12, swerve=1.0)))
    fast = windows(60, seed=13)
    fast["hist"][..., 0] = fast["hist"][:, -1:, :, 0] + (fast["hist"][..., 0]
                                                         - fast["hist"][:, -1:, :, 0]) / 3
    faster = c.feature_distance(density, c.window_features(fast))
    assert c.ood_auroc(calm, swerving) > 0.95 and c.ood_auroc(calm, faster) > 0.95
    assert np.median(calm) < 2 * np.sqrt(len(c.WINDOW_FEATURES))
