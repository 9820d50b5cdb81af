"""evaluation/replica_check.py: the replica's figures against simulator labels."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.replica_check import main, report


def test_report_counts_accepted_unsafe_and_rejected_safe_candidates():
    first = np.array([[0, 3, 3, 1], [3, 3, 2, 3]])  # event within 3 steps where < 3
    valid = np.array([[True, True, True, True], [True, True, True, False]])
    hist_mask = np.ones((2, 4, 2), dtype=bool)
    hist_mask[1, 0, 0] = False  # the second decision is an episode's first
    prob = np.array([[0.9, 0.01, 0.3, 0.04], [0.1, 0.02, 0.5, 0.0]])
    figures = report({"first": first, "valid": valid, "hist_mask": hist_mask}, prob)
    # budget 0.05 accepts (0,1) safe, (0,3) unsafe, (1,1) safe: one of three unsafe
    assert figures["accepted_unsafe@0.05"] == pytest.approx(1 / 3)
    # of the four valid safe candidates (0,1), (0,2), (1,0), (1,1) two are above 0.05
    assert figures["safe_rejected@0.05"] == pytest.approx(2 / 4)
    # of the 3 x 4 (event, safe) pairs only (0,3) at 0.04 falls below two safe ones
    assert figures["auroc"] == pytest.approx(10 / 12)
    assert figures["early_auroc"] == pytest.approx(1.0)  # the second decision alone


def test_a_missing_labels_file_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert main([str(tmp_path / "none.npz")]) == 2
    err = capsys.readouterr().err
    assert "cannot use" in err and err.count("\n") == 1


def test_a_bad_shortcut_setting_is_one_line_and_exit_code_2(tmp_path, capsys):
    path = tmp_path / "labels.npz"
    np.savez(path, hist=np.zeros((1, 2, 2, 7), np.float32), hist_mask=np.ones((1, 2, 2), bool),
             valid=np.ones((1, 125), bool), first=np.full((1, 125), 3), episode=np.zeros(1))
    assert main([str(path), "--late-idm-every", "0"]) == 2
    err = capsys.readouterr().err
    assert "--late-idm-every must be >= 1" in err and err.count("\n") == 1
