"""Risk-critic labels: every road candidate judged on simulator copies, reproducibly."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest

from evaluation.oracle import OracleLookahead, intrudes, lookahead_step
from evaluation.policies import road_candidates, road_mask
from models.candidates import enumerate_candidates
from pipeline import artifacts
from pipeline.critic_labels import (
    LABEL_ARRAYS,
    Labeller,
    LabelSpec,
    concat_labels,
    contingent_first,
    fitting_labels,
    mirror_permutation,
    mirrored,
)
from pipeline.highway_source import make_env

SPEC = LabelSpec("highway-fast-v0", {"duration": 4, "vehicles_count": 12}, history=4,
                 vehicles=5, horizon=2, envelope=(8.0, 2.5), gamma=0.9, epsilon=0.3)


def replay(core, sequence, envelope, gamma) -> tuple[int, float]:
    """The step after which `sequence` first crashes or meets the envelope, and its
    discounted reward sum (stopped at a crash or the episode's end), by hand."""
    twin, first, total = copy.deepcopy(core), len(sequence), 0.0
    for t, action in enumerate(sequence):
        reward, over, crashed = lookahead_step(twin, int(action))
        total += gamma ** t * reward
        if (crashed or intrudes(twin, *envelope)) and first == len(sequence):
            first = t
        if over or crashed:
            break
    return first, total


def test_labels_match_a_step_by_step_replay_and_cover_the_road_candidates():
    labeller = Labeller(SPEC)
    labeller.env.reset(seed=3)
    labeller.env.step(3)
    valid, first, returns = labeller.decision_labels()
    on_road = road_candidates(labeller.env, labeller.candidates)
    assert len(on_road) < len(valid)  # some lane changes leave the road here
    assert np.array_equal(labeller.candidates[valid], on_road)
    assert (first[~valid] == SPEC.horizon).all() and (returns[~valid] == 0).all()
    for k in np.flatnonzero(valid):
        want_first, want_return = replay(labeller.env.unwrapped, labeller.candidates[k],
                                         SPEC.envelope, SPEC.gamma)
        assert first[k] == want_first
        assert returns[k] == pytest.approx(want_return, abs=1e-9)
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


def test_contingent_labels_take_the_best_continuation_of_the_committed_actions():
    candidates = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0]])  # (K, F), F = 2
    first = np.array([[0, 1, 2, 0, 1],  # action 0: at best step 1; action 1: never
                      [2, 0, 1, 1, 0]])  # (D, K)
    valid = np.array([[True, True, True, True, True],
                      [False, True, True, True, True]])  # an unlabelled candidate
    want = np.array([[1, 1, 2, 2, 1],
                     [2, 0, 1, 1, 0]])  # the unlabelled one neither counts nor changes
    assert np.array_equal(contingent_first(first, valid, candidates, 1), want)
    assert np.array_equal(contingent_first(first, valid, candidates, 2), first)
    assert np.array_equal(first[0], [0, 1, 2, 0, 1])  # the truth is not overwritten


def test_fitting_labels_keep_the_truth_unless_fewer_steps_are_committed():
    candidates = enumerate_candidates(3)  # (125, 3)
    first = np.where(candidates[:, 2] == 4, 3, candidates.sum(axis=1) % 3)[None]  # (1, K)
    labels, truth = {"first": first, "valid": np.ones((1, 125), bool)}, first.copy()
    assert fitting_labels(labels, 0, 3) is labels and fitting_labels(labels, 3, 3) is labels
    assert (fitting_labels(labels, 2, 3)["first"] == 3).all()  # SLOWER last is always safe
    one = fitting_labels(labels, 1, 3)["first"]
    assert (one == 3).all() and np.array_equal(labels["first"], truth)
    first[0, candidates[:, 0] == 0] = 0  # LANE_LEFT first: an event at once, whatever next
    assert (fitting_labels(labels, 1, 3)["first"][0, candidates[:, 0] == 0] == 0).all()


def test_a_missing_or_corrupt_critic_is_refused_in_one_line(tmp_path):
    import json

    from pipeline.artifacts import Artifacts
    from pipeline.errors import StageError
    from pipeline.stage_io import CRITIC_FILE, CRITIC_SPEC, load_critic

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
    """Rounds after the first are driven by the planner's decision rule (simulate.*) and
    an exported planner, so both are in the critic's key then; a single oracle-driven
    round ignores them and the export settings it never reads, and so does the oracle
    round's label cache. What labels a candidate (the envelope) always keys it."""
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
    assert key_and_cache("export.lookahead=2", "export.samples=4") == one_round
    assert key_and_cache("critic.rounds=2", "export.lookahead=2")[0] != two_rounds[0]
    assert key_and_cache("export.envelope_length=6")[0] != one_round[0]


@pytest.mark.parametrize("commit", [-1, 4])
def test_a_commit_outside_the_horizon_is_refused(commit):
    from pipeline.config import load_config
    from pipeline.errors import StageError
    from pipeline.stages.critic import check

    cfg = load_config(None, ["critic.episodes=4", f"critic.commit={commit}"])
    with pytest.raises(StageError, match=r"critic.commit must lie in \[0, export.horizon = 3\]"):
        check(cfg)


def mirror_core(core):
    """A copy of a highway-env state seen in a mirror across the road's centre line."""
    twin = copy.deepcopy(core)
    net = twin.road.network
    lanes = core.config["lanes_count"]
    outer = net.get_lane(("0", "1", 0)).position(0, 0)[1] + net.get_lane(
        ("0", "1", lanes - 1)).position(0, 0)[1]

    def flip(index):
        return (index[0], index[1], lanes - 1 - index[2])

    for vehicle in twin.road.vehicles:
        vehicle.position = np.array([vehicle.position[0], outer - vehicle.position[1]])
        vehicle.heading = -vehicle.heading
        vehicle.lane_index = flip(vehicle.lane_index)
        vehicle.lane = net.get_lane(vehicle.lane_index)
        vehicle.target_lane_index = flip(vehicle.target_lane_index)
    return twin


def test_the_simulator_labels_a_mirrored_scene_with_the_mirrored_candidates():
    candidates = enumerate_candidates(2)
    swap = mirror_permutation(candidates)
    oracle = OracleLookahead(candidates, 0.9, (8.0, 2.5))
    env = make_env("highway-fast-v0", {"vehicles_count": 20})
    env.reset(seed=7)
    compared, events = 0, 0
    for _ in range(5):
        core = env.unwrapped
        rows = np.flatnonzero(road_mask(env, candidates))
        _, first, _ = oracle.first_events(core, candidates[rows])
        _, image, _ = oracle.first_events(mirror_core(core), candidates[swap[rows]])
        np.testing.assert_array_equal(first, image)
        compared, events = compared + len(rows), events + int((first < 2).sum())
        env.step(1)
    env.close()
    assert compared > 50 and 0 < events < compared  # both safe and intruding candidates


def test_mirror_permutation_swaps_left_and_right_lane_changes():
    candidates = enumerate_candidates(2)
    swap = mirror_permutation(candidates)
    np.testing.assert_array_equal(swap[swap], np.arange(len(candidates)))
    assert candidates[swap[0 * 5 + 3]].tolist() == [2, 3]  # row 5 a + b holds (a, b)
    assert swap[1 * 5 + 4] == 1 * 5 + 4  # (IDLE, SLOWER) is its own image
    with pytest.raises(ValueError, match="lacks the mirror image"):
        mirror_permutation(candidates[:3])


def test_mirrored_decisions_flip_the_lateral_features_and_trade_labels():
    candidates = enumerate_candidates(1)  # LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER
    hist = np.zeros((1, 1, 2, 7), dtype=np.float32)
    hist[0, 0, 0] = [0, 0, 25, 1, 0.99, 0.1, 0]  # the ego on lane 0, drifting right
    hist[0, 0, 1] = [10, 4, 20, 0, 1, 0, 1]
    labels = {"hist": hist, "hist_mask": np.array([[[True, False]]]),
              "valid": np.array([[False, True, True, True, True]]),
              "first": np.array([[1, 3, 0, 2, 3]]), "returns": np.zeros((1, 5), np.float32),
              "episode": np.array([5]), "speed": np.array([25.0], np.float32)}
    image = mirrored(labels, 3, candidates)
    assert image["hist"][0, 0, 0].tolist() == pytest.approx([0, 0, 25, -1, 0.99, -0.1, 2])
    assert image["hist"][0, 0, 1, 6] == 0  # an absent slot stays empty
    assert image["valid"].tolist() == [[True, True, False, True, True]]
    assert image["first"].tolist() == [[0, 3, 1, 2, 3]]
    assert labels["first"].tolist() == [[1, 3, 0, 2, 3]]  # the original is untouched


def test_the_mirror_and_the_replica_are_refused_for_a_road_without_lanes_count():
    from pipeline.config import load_config
    from pipeline.errors import StageError
    from pipeline.stage_io import road_lanes

    assert road_lanes(load_config(None, ["ingest.env_config={lanes_count: 4}"]), "x") == 4
    with pytest.raises(StageError, match="critic.mirror needs a straight road"):
        road_lanes(load_config(None, ["ingest.env_id=merge-v0"]), "critic.mirror")
    with pytest.raises(StageError, match="critic.prior=replica needs a straight road"):
        road_lanes(load_config(None, ["ingest.env_id=merge-v0"]), "critic.prior=replica")


def test_the_replica_is_refused_for_an_env_at_other_rates():
    from pipeline.config import load_config
    from pipeline.errors import StageError
    from pipeline.stage_io import replica_lanes

    assert replica_lanes(load_config(None, []), "export.risk=replica") == 3  # highway-fast-v0
    with pytest.raises(StageError, match="export.risk=replica replays highway-env at 5") as err:
        replica_lanes(load_config(None, ["ingest.env_id=highway-v0"]), "export.risk=replica")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("weight", ["-0.5", ".nan"])
def test_a_negative_or_undefined_rank_weight_is_refused(weight):
    from pipeline.config import load_config
    from pipeline.errors import StageError
    from pipeline.stages.critic import check

    cfg = load_config(None, ["critic.episodes=4", f"critic.rank_weight={weight}"])
    with pytest.raises(StageError, match="critic.rank_weight must be a finite number >= 0"):
        check(cfg)
