"""Risk-critic labels: every road candidate judged on simulator copies, reproducibly."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest

from evaluation.oracle import intrudes, lookahead_step
from evaluation.policies import road_candidates
from pipeline import artifacts
from pipeline.critic_labels import LABEL_ARRAYS, Labeller, LabelSpec, concat_labels

SPEC = LabelSpec("highway-fast-v0", {"duration": 4, "vehicles_count": 12}, history=4,
                 vehicles=5, horizon=2, envelope=(8.0, 2.5), gamma=0.9, epsilon=0.3)


def replay_first(core, sequence, envelope) -> int:
    """The step after which `sequence` first crashes or meets the envelope, by hand."""
    twin = copy.deepcopy(core)
    for t, action in enumerate(sequence):
        _, over, crashed = lookahead_step(twin, int(action))
        if crashed or intrudes(twin, *envelope):
            return t
        if over:
            break
    return len(sequence)


def test_labels_match_a_step_by_step_replay_and_cover_the_road_candidates():
    labeller = Labeller(SPEC)
    labeller.env.reset(seed=3)
    labeller.env.step(3)
    valid, first, _ = labeller.decision_labels()
    on_road = road_candidates(labeller.env, labeller.candidates)
    assert len(on_road) < len(valid)  # some lane changes leave the road here
    assert np.array_equal(labeller.candidates[valid], on_road)
    assert (first[~valid] == SPEC.horizon).all()
    for k in np.flatnonzero(valid):
        want = replay_first(labeller.env.unwrapped, labeller.candidates[k], SPEC.envelope)
        assert first[k] == want
    labeller.close()


def test_a_wide_envelope_labels_every_candidate_at_its_first_step():
    labeller = Labeller(replace(SPEC, envelope=(1e4, 1e4)))
    labeller.env.reset(seed=3)
    valid, first, _ = labeller.decision_labels()
    assert (first[valid] == 0).all()
    labeller.close()


def test_episodes_are_reproducible_and_hold_every_decision():
    labeller = Labeller(SPEC)
    a, b = labeller.episode(11), labeller.episode(11)
    c = labeller.episode(12)
    labeller.close()
    for name in LABEL_ARRAYS:
        assert np.array_equal(a[name], b[name]), name
    d = len(a["episode"])
    assert a["hist"].shape == (d, 4, 5, a["hist"].shape[-1]) and a["hist"].dtype == np.float32
    assert a["hist_mask"].shape == (d, 4, 5) and a["valid"].shape == (d, 25)
    assert (a["episode"] == 11).all() and a["hist_mask"][:, -1, 0].all()  # the ego is there
    both = concat_labels([c, a])
    assert both["episode"][0] == 11 and len(both["episode"]) == d + len(c["episode"])


def test_a_missing_or_corrupt_critic_is_refused_in_one_line(tmp_path):
    import json

    from pipeline.artifacts import Artifacts
    from pipeline.errors import StageError
    from pipeline.stages.critic import CRITIC_FILE, CRITIC_SPEC, load_critic

    stage = Artifacts("critic", "k", tmp_path, {})
    assert load_critic(stage) is None  # critic.episodes 0: no critic, nothing to refuse
    (tmp_path / CRITIC_SPEC).write_text(json.dumps({"feat_dim": 8, "n_vehicles": 3,
                                                   "hidden_dim": 4}))
    with pytest.raises(StageError, match="no usable risk critic") as err:
        load_critic(stage)
    assert "\n" not in str(err.value)
    (tmp_path / CRITIC_FILE).write_bytes(b"not a torch file")
    with pytest.raises(StageError, match="no usable risk critic"):
        load_critic(stage)
    (tmp_path / CRITIC_SPEC).write_text(json.dumps({"feat_dim": 8}))
    with pytest.raises(StageError, match="no usable risk critic"):
        load_critic(stage)


def test_the_decision_rule_keys_the_critic_only_when_a_planner_labels(tmp_path):
    """Rounds after the first are driven by the planner's decision rule (simulate.*), so
    it is in the critic's key then; a single oracle-driven round ignores it, and so does
    the oracle round's label cache."""
    from pipeline.config import load_config
    from pipeline.runner import key_of
    from pipeline.stages import critic

    inputs = {"train": artifacts.Artifacts("train", "abc", tmp_path, {})}

    def key_and_cache(*overrides):
        cfg = load_config(None, [f"workdir={tmp_path}", "critic.episodes=4", *overrides])
        return key_of(critic.STAGE, cfg, inputs), critic.label_cache(
            cfg, critic.label_spec(cfg, ""), "")

    one_round = key_and_cache()
    assert key_and_cache("simulate.risk_budget=0.5") == one_round
    two_rounds = key_and_cache("critic.rounds=2")
    other_rule = key_and_cache("critic.rounds=2", "simulate.risk_weight=3")
    assert other_rule[0] != two_rounds[0] and other_rule[1] == two_rounds[1] == one_round[1]
