"""Golden, hand-built cases for evaluation.metrics."""

import math

import numpy as np
import pytest

from evaluation import metrics as m


def _tracks(batch=2, steps=4, vehicles=3, seed=0):
    """Random (B, F, N, 2) positions and an all-true (B, F, N) mask."""
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(batch, steps, vehicles, 2)) * 10
    return target, np.ones(target.shape[:-1], bool)


# --------------------------------------------------------------------------- displacement


@pytest.mark.parametrize("batch", [1, 3])
def test_perfect_forecast_has_zero_error(batch):
    target, mask = _tracks(batch=batch)
    error = m.displacement_error(target, target)
    assert error.shape == target.shape[:-1]
    ade, fde = m.ade_fde_by_horizon(error, mask, seconds=[1, 2, 4], dt=1.0)
    np.testing.assert_array_equal(ade, 0.0)
    np.testing.assert_array_equal(fde, 0.0)


def test_constant_offset_gives_known_ade_fde():
    target, mask = _tracks()
    pred = target + np.array([3.0, 4.0])  # 5 m off everywhere
    error = m.displacement_error(pred, target)
    np.testing.assert_allclose(error, 5.0)
    ade, fde = m.ade_fde_by_horizon(error, mask, seconds=[1, 3], dt=1.0)
    np.testing.assert_allclose(ade, [5.0, 5.0])
    np.testing.assert_allclose(fde, [5.0, 5.0])


def test_growing_error_uses_step_round_s_over_dt_minus_one():
    # error grows 1 m per step: steps 0..3 have error 1, 2, 3, 4 (dt = 0.5 s)
    target = np.zeros((1, 4, 1, 2))
    pred = target.copy()
    pred[0, :, 0, 0] = [1.0, 2.0, 3.0, 4.0]
    error = m.displacement_error(pred, target)
    ade, fde = m.ade_fde_by_horizon(error, np.ones((1, 4, 1), bool), seconds=[1.0, 2.0], dt=0.5)
    np.testing.assert_allclose(fde, [2.0, 4.0])  # steps 1 and 3
    np.testing.assert_allclose(ade, [1.5, 2.5])  # mean of 1,2 and of 1,2,3,4


def test_horizon_beyond_window_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match="horizon 5 s needs future step 4"):
        m.horizon_step(5, dt=1.0, n_steps=3)


def test_masked_entries_are_ignored_even_when_garbage():
    target, mask = _tracks(batch=1, steps=3, vehicles=2)
    pred = target + np.array([0.0, 2.0])
    mask[0, 2, 1] = False  # last step of vehicle 1 missing
    mask[0, :, 0] = False  # vehicle 0 missing entirely
    pred[0, 2, 1] = [np.nan, 1e9]
    pred[0, :, 0] = 1e9
    error = m.displacement_error(pred, target)
    ade, fde = m.ade_fde_by_horizon(error, mask, seconds=[2, 3], dt=1.0)
    np.testing.assert_allclose(ade, [2.0, 2.0])
    assert fde[0] == pytest.approx(2.0)
    assert math.isnan(fde[1])  # nothing valid at step 2: nan, not a crash
    values, valid = m.average_displacement(error, mask)
    np.testing.assert_array_equal(valid, [[False, True]])
    np.testing.assert_allclose(values, [[0.0, 2.0]])


def test_masked_mean_with_nothing_valid_is_nan_and_axis_works():
    values = np.array([[1.0, 3.0], [np.nan, 7.0]])
    mask = np.array([[True, True], [False, False]])
    assert math.isnan(m.masked_mean(values, np.zeros_like(mask)))
    assert m.masked_mean(values, mask) == pytest.approx(2.0)
    row_means = m.masked_mean(values, mask, axis=1)
    assert row_means[0] == pytest.approx(2.0) and math.isnan(row_means[1])


def test_min_fde_and_min_ade_pick_the_best_sample():
    target = np.zeros((1, 2, 1, 2))  # (B, F, N, 2)
    # lateral error per sample and step: minFDE comes from sample 0, minADE from sample 1
    step_errors = np.array([[4.0, 0.5], [1.0, 1.0], [3.0, 3.0]])  # (S, F)
    samples = np.zeros((3, 1, 2, 1, 2))  # (S, B, F, N, 2)
    samples[:, 0, :, 0, 1] = step_errors
    mask = np.ones((1, 2, 1), bool)
    fde, valid = m.min_fde_k(samples, target, mask)
    assert fde.shape == valid.shape == (1, 1) and valid.all()
    assert fde[0, 0] == pytest.approx(0.5)
    ade, _ = m.min_ade_k(samples, target, mask)
    assert ade[0, 0] == pytest.approx(1.0)
    fde_first, _ = m.min_fde_k(samples, target, mask, step=0)
    assert fde_first[0, 0] == pytest.approx(1.0)


def test_min_fde_ignores_a_masked_final_step():
    target = np.zeros((1, 2, 2, 2))
    samples = np.ones((2, 1, 2, 2, 2))
    mask = np.array([[[True, True], [True, False]]])
    fde, valid = m.min_fde_k(samples, target, mask)
    np.testing.assert_array_equal(valid, [[True, False]])
    assert fde[0, 0] == pytest.approx(math.sqrt(2))


def test_miss_rate_hand_case():
    final_error = np.array([0.5, 2.0, 2.5, 10.0, 99.0])
    valid = np.array([True, True, True, True, False])
    np.testing.assert_array_equal(m.misses(final_error), [0, 0, 1, 1, 1])
    assert m.miss_rate(final_error, valid) == pytest.approx(0.5)
    assert m.miss_rate(final_error, valid, threshold=0.1) == pytest.approx(1.0)


def test_gaussian_nll_hand_case():
    nll = m.gaussian_nll(
        mean=np.array([0.0, 1.0]), std=np.array([1.0, 2.0]), target=np.array([0.0, 3.0])
    )
    half_log_two_pi = 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(nll, [half_log_two_pi, half_log_two_pi + math.log(2.0) + 0.5])


def test_gaussian_nll_zero_std_in_masked_entry_stays_finite():
    nll = m.gaussian_nll(np.zeros(2), np.array([0.0, 1.0]), np.zeros(2))
    assert np.isfinite(nll).all()


def test_neighbour_mask_radius_presence_and_ego_excluded():
    hist = np.zeros((1, 2, 4, 7))  # (B, H, N, D)
    hist[0, -1, :, 0] = [0.0, 30.0, 60.0, -40.0]
    hist[0, -1, 3, 1] = 30.0  # (-40, 30): 50 m exactly, inside
    hist_mask = np.ones((1, 2, 4), bool)
    near = m.neighbour_mask(hist, hist_mask)
    np.testing.assert_array_equal(near, [[False, True, False, True]])
    hist_mask[0, -1, 1] = False
    np.testing.assert_array_equal(
        m.neighbour_mask(hist, hist_mask, radius=100), [[False, False, True, True]]
    )


# --------------------------------------------------------------------------- collision risk


def test_ece_of_calibrated_probabilities_is_near_zero():
    rng = np.random.default_rng(1)
    prob = rng.uniform(size=200_000)
    label = (rng.uniform(size=prob.size) < prob).astype(float)
    assert m.expected_calibration_error(prob, label) < 0.01


def test_ece_of_known_miscalibration():
    prob = np.full(100, 0.8)
    label = np.tile([0.0, 1.0], 50)
    assert m.expected_calibration_error(prob, label) == pytest.approx(0.3)


def test_ece_two_bins_hand_value_and_mask():
    # bin [0.0, 0.5): p = 0.1 x4, one positive -> |0.25 - 0.1| = 0.15, weight 4/6
    # bin [0.5, 1.0]: p = 1.0 x2, one positive -> |0.5 - 1.0| = 0.5, weight 2/6
    prob = np.array([0.1, 0.1, 0.1, 0.1, 1.0, 1.0, 0.3])
    label = np.array([1, 0, 0, 0, 1, 0, 1])
    mask = np.array([True] * 6 + [False])
    ece = m.expected_calibration_error(prob, label, mask=mask, n_bins=2)
    assert ece == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.5)
    bins = m.reliability_bins(prob, label, n_bins=2, mask=mask)
    np.testing.assert_array_equal(bins.count, [4, 2])
    np.testing.assert_allclose(bins.mean_prob, [0.1, 1.0])
    np.testing.assert_allclose(bins.frequency, [0.25, 0.5])
    np.testing.assert_allclose(bins.edges, [0.0, 0.5, 1.0])


def test_reliability_bins_empty_bins_are_nan():
    bins = m.reliability_bins(np.array([0.05, 0.95]), np.array([0, 1]))
    assert bins.count.shape == (15,) and bins.count.sum() == 2
    assert np.isnan(bins.mean_prob[5]) and np.isnan(bins.frequency[5])
    assert bins.count[0] == 1 and bins.count[14] == 1


def test_brier_hand_value():
    brier = m.brier(np.array([0.8, 0.8, 0.0, 1.0]), np.array([1, 0, 0, 0]))
    np.testing.assert_allclose(brier, [0.04, 0.64, 0.0, 1.0])
    assert m.masked_mean(brier, np.array([True, True, False, False])) == pytest.approx(0.34)


def test_auroc_and_average_precision_of_perfect_separation():
    prob = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    label = np.array([0, 0, 0, 1, 1])
    assert m.auroc(prob, label) == pytest.approx(1.0)
    assert m.average_precision(prob, label) == pytest.approx(1.0)
    assert m.auroc(1 - prob, label) == pytest.approx(0.0)


def test_decision_auroc_orders_within_each_row_only():
    # each row is perfectly ordered, but the rows' scales differ: pooled, they mix
    prob = np.array([[0.1, 0.2, 0.0], [0.5, 0.6, 0.0], [0.3, 0.3, 0.0]])
    label = np.array([[0, 1, 0], [0, 1, 0], [1, 1, 0]])
    mask = np.array([[True, True, False], [True, True, False], [True, True, True]])
    rows = [m.auroc(prob[i], label[i], mask[i]) for i in range(3)]
    assert rows[0] == rows[1] == 1.0 and rows[2] == 1.0
    assert m.decision_auroc(prob, label, mask) == pytest.approx(1.0)
    assert m.auroc(prob[:2], label[:2], mask[:2]) == pytest.approx(0.75)  # pooled mixes
    assert m.decision_auroc(1 - prob, label, mask) == pytest.approx(0.0)
    one_class = np.array([[True, False, True], [False, False, False], [True, True, False]])
    assert math.isnan(m.decision_auroc(prob, label, one_class))  # no row has both classes
    with pytest.raises(ValueError, match="one shape"):
        m.decision_auroc(prob, label, mask[:2])


def test_ranking_metrics_with_one_class_are_nan():
    prob, label = np.array([0.1, 0.9]), np.array([0, 0])
    assert math.isnan(m.auroc(prob, label))
    assert math.isnan(m.average_precision(prob, label))
    assert math.isnan(m.auroc(prob, np.array([0, 1]), mask=np.array([True, False])))


def test_bad_probabilities_and_labels_are_refused():
    with pytest.raises(ValueError, match="prob must lie in"):
        m.auroc(np.array([1.5, 0.2]), np.array([1, 0]))
    with pytest.raises(ValueError, match="label must hold only 0 and 1"):
        m.expected_calibration_error(np.array([0.5]), np.array([2]))


# --------------------------------------------------------------------------- uncertainty


def test_spearman_of_monotone_and_reversed_relations():
    uncertainty = np.array([0.1, 0.5, 0.2, 0.9])
    error = uncertainty**3
    assert m.spearman(uncertainty, error) == pytest.approx(1.0)
    assert m.spearman(uncertainty, -error) == pytest.approx(-1.0)
    mask = np.array([True, True, True, False])
    error_with_garbage = np.array([1.0, 3.0, 2.0, -50.0])
    assert m.spearman(uncertainty, error_with_garbage, mask) == pytest.approx(1.0)
    assert math.isnan(m.spearman(np.ones(4), error))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="do not agree"):
        m.displacement_error(np.zeros((2, 3, 4, 2)), np.zeros((2, 5, 4, 2)))
