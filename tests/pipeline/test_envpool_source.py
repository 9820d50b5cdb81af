"""The EnvPool backend: same dataset whatever the batching, same schema and semantics as
highway-env's recording."""

import importlib.util
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

import pipeline.stages  # noqa: F401  (registers the stages)
from models.candidates import FASTER, IDLE, LANE_LEFT, LANE_RIGHT, SLOWER
from pipeline.config import load_config
from pipeline.dataset import read_dataset, shard_files
from pipeline.envpool_source import EnvpoolSource, load_registry, run_batch
from pipeline.rollouts import collect
from pipeline.runner import key_of, stage_named
from tests.pipeline.test_rollouts import assert_same_dataset

ENV = "highway-fast-v0"
CONFIG = {"duration": 6, "vehicles_count": 12}
POLICIES = [("rule", 0.2, 2.0), ("idle", 0.0, 1.0), ("random", 0.0, 1.0)]


def run(out_dir, episodes=10, workers=1, batch=64, backend="envpool", policies=POLICIES,
        config=CONFIG):
    return collect(out_dir, ENV, config, policies, episodes, seed=3, workers=workers,
                   episodes_per_shard=4, progress=False, backend=backend, batch=batch)


def test_dataset_is_the_same_for_any_batch_size_and_thread_count(tmp_path):
    run(tmp_path / "a", workers=1, batch=64)
    run(tmp_path / "b", workers=2, batch=3)
    a, b = read_dataset(tmp_path / "a"), read_dataset(tmp_path / "b")
    assert_same_dataset(a, b)
    assert len(set(a.steps["episode"])) == 10
    # not all episodes alike: the seeds give different scenes
    assert len({float(x) for x in a.frames["x"][a.frames["frame"] == 0]}) > 10


def test_schema_matches_the_highway_env_recording(tmp_path):
    run(tmp_path / "pool", episodes=2)
    run(tmp_path / "hw", episodes=2, backend="highway-env")
    for table in (0, 1):
        pool = pq.read_schema(shard_files(tmp_path / "pool", 0)[table])
        highway = pq.read_schema(shard_files(tmp_path / "hw", 0)[table])
        assert pool.remove_metadata() == highway.remove_metadata()
    pool, highway = read_dataset(tmp_path / "pool"), read_dataset(tmp_path / "hw")
    assert pool.manifest["simulation_frequency"] == highway.manifest["simulation_frequency"]
    assert pool.manifest["backend"] == "envpool" and highway.manifest["backend"] == "highway-env"


def test_vehicle_ids_persist_and_each_decision_spans_its_frames(tmp_path):
    run(tmp_path / "d", episodes=6, policies=[("rule", 0.0, 1.0)])
    data = read_dataset(tmp_path / "d")
    f, dt = data.frames, 1 / 5
    for episode in set(f["episode"]):
        rows = f["episode"] == episode
        ids, frame, x, vx = f["vehicle_id"][rows], f["frame"][rows], f["x"][rows], f["vx"][rows]
        counts = np.bincount(frame)
        assert (counts == counts[0]).all()  # every vehicle in every frame
        assert (f["is_ego"][rows] == (ids == 0)).all()
        for vehicle in set(ids):
            mine = np.argsort(frame[ids == vehicle])
            step = np.diff(x[ids == vehicle][mine])
            # a persistent id moves by its own speed each frame, never jumps to another car
            assert np.abs(step - vx[ids == vehicle][mine][:-1] * dt).max() < 1.5
    steps = data.steps
    assert (np.diff(steps["first_frame"][steps["episode"] == 0]) == 5).all()


def test_collisions_end_the_episode_and_are_marked_once(tmp_path):
    run(tmp_path / "c", episodes=8, policies=[("idle", 0.0, 1.0)], config={"duration": 20})
    data = read_dataset(tmp_path / "c")
    steps, frames = data.steps, data.frames
    crashed_episodes = 0
    for episode in set(steps["episode"]):
        mine = steps["episode"] == episode
        collision = steps["collision"][mine]
        assert collision.sum() <= 1
        if collision.any():
            crashed_episodes += 1
            assert collision[-1] and steps["terminated"][mine][-1]
            last = (frames["episode"] == episode) & frames["is_ego"]
            assert frames["crashed"][last][-1]
        else:
            assert steps["truncated"][mine][-1]
    assert crashed_episodes >= 4  # always IDLE crashes in most highway-fast episodes


class Scripted:
    """Plays the same action sequence in every slot (run_batch's policy protocol)."""

    def __init__(self, actions):
        self.actions, self.calls = list(actions), 0

    def act(self, slots, scenes):
        action = self.actions[self.calls]
        self.calls += 1
        return np.full(len(slots), action)


def test_decision_on_first_frame_then_idle_reproduces_the_decision_step():
    """One step per frame, the meta-action on a decision's first frame and IDLE on the
    rest, gives the same ego state at every decision boundary as EnvPool stepping whole
    decisions (policy_frequency 1): target speeds and lane changes both."""
    actions = [FASTER, LANE_LEFT, IDLE, FASTER, LANE_RIGHT, SLOWER, IDLE, LANE_RIGHT]
    source = EnvpoolSource(ENV, {"duration": len(actions)})
    recorder = run_batch(source, [11], Scripted(actions))
    rows = recorder.frames_by_env()[0]
    ego = rows[(rows[:, 1] == 0) & (rows[:, 0] % 5 == 0)]  # ego at frames 0, 5, 10, ...
    whole = load_registry().make("HighwayFast-v0", env_type="gymnasium", num_envs=1,
                                 env_seed=[11], seed=0, duration=len(actions))
    whole.reset()
    assert len(ego) >= 6
    for k, action in enumerate(actions[: len(ego)]):
        state = whole.debug_states()[0].vehicles[0]
        assert (ego[k, 3], ego[k, 4]) == (pytest.approx(state.x, abs=1e-9),
                                          pytest.approx(state.y, abs=1e-9))
        whole.step(np.array([action]))
    lanes = ego[:, 10]
    assert len(set(lanes)) > 1  # the script changed lanes


def test_backend_is_part_of_the_ingest_key_and_the_default_keeps_old_keys():
    ingest = stage_named("ingest")
    default = load_config(None, ["ingest.episodes=4"])
    assert key_of(ingest, default, {}) == key_of(
        ingest, load_config(None, ["ingest.episodes=4", "ingest.backend=highway-env"]), {})
    pooled = load_config(None, ["ingest.episodes=4", "ingest.backend=envpool"])
    assert key_of(ingest, pooled, {}) != key_of(ingest, default, {})
    batched = load_config(None, ["ingest.episodes=4", "ingest.backend=envpool",
                                 "ingest.batch=7", "ingest.workers=1"])
    assert key_of(ingest, batched, {}) == key_of(ingest, pooled, {})


def test_unknown_env_id_and_config_get_one_line_errors():
    with pytest.raises(ValueError, match="'merge-v0' has no EnvPool counterpart"):
        EnvpoolSource("merge-v0")
    with pytest.raises(ValueError, match="'other_vehicles_type' has no EnvPool counterpart"):
        EnvpoolSource(ENV, {"other_vehicles_type": "x"})
    with pytest.raises(ValueError, match="env_config.vehicles_density must be a number above"):
        EnvpoolSource(ENV, {"vehicles_density": float("nan")})
    with pytest.raises(ValueError, match="env_config.vehicles_count must be a number >= 0"):
        EnvpoolSource(ENV, {"vehicles_count": -3})


def test_missing_envpool_gets_an_install_hint(monkeypatch):
    for name in [n for n in sys.modules if n == "envpool" or n.startswith("envpool.")]:
        monkeypatch.delitem(sys.modules, name)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "envpool" else real(name, *a))
    with pytest.raises(ValueError, match="needs the envpool package: pip install"):
        load_registry()


def test_the_backend_bench_tabulates_each_policy_on_both_simulators():
    from pipeline.bench.backend import ALIGNMENT_POLICIES, alignment, others_figures, record

    rows, samples = alignment(ENV, CONFIG, seed=1, episodes=4, workers=1)
    assert [(r["backend"], r["episodes"]) for r in rows] == \
        [("highway-env", 4), ("envpool", 4)] * len(ALIGNMENT_POLICIES)
    for row in rows:
        for name in ("collision", "speed", "decisions"):
            value = row["collision_rate" if name == "collision" else name]
            assert row[f"{name}_low"] <= value <= row[f"{name}_high"], name
        assert 15 < row["speed"] < 40 and 1 <= row["decisions"] <= CONFIG["duration"]
    stats, _ = record(ENV, CONFIG, ("idle", 0.0), 4, 1, "envpool", 1)
    idle = next(r for r in rows if r["policy"] == "idle" and r["backend"] == "envpool")
    assert idle["collision_rate"] == stats.collision_rate
    figures = others_figures(samples, seed=0)
    assert 0 <= figures["others/speed_ks"] <= 1 and 0 <= figures["others/speed_ks_p"] <= 1
    assert 15 < figures["others/speed_mean/envpool"] < 35
    for backend in ("highway-env", "envpool"):  # the other drivers do change lanes
        assert figures[f"others/lane_changes_per_min_low/{backend}"] > 0


def test_shifted_test_sets_run_on_envpool_where_it_has_the_scenario():
    from pipeline.stages.evaluate import testset_config

    pooled = load_config(None, ["ingest.backend=envpool", "evaluate.testsets=[{name: dense, "
                                "env_config: {vehicles_density: 1.5}}, {name: merge, env_id: "
                                "merge-v0}, {name: sim, backend: highway-env}, {name: "
                                "aggressive, env_config: {other_vehicles_type: "
                                "highway_env.vehicle.behavior.AggressiveVehicle}}]"])
    backends = [testset_config(pooled, i, t).ingest.backend.value
                for i, t in enumerate(pooled.evaluate.testsets)]
    # EnvPool cannot change the other drivers' class: that shift is collected by highway-env
    assert backends == ["envpool", "highway-env", "highway-env", "highway-env"]
    evaluate = stage_named("evaluate")
    inputs = {"ingest": FakeArtifacts("i"), "train": FakeArtifacts("t")}
    chosen = load_config(None, ["evaluate.testsets=[{name: dense, backend: highway-env}]"])
    unset = load_config(None, ["evaluate.testsets=[{name: dense}]"])
    assert key_of(evaluate, chosen, inputs) != key_of(evaluate, unset, inputs)


class FakeArtifacts:
    def __init__(self, key: str) -> None:
        self.key = key


def test_windows_cut_shard_by_shard_equal_one_cut_of_the_whole_dataset(tmp_path):
    from pipeline.stage_io import load_windows
    from pipeline.windows import lane_centers_ego, lane_medians, make_windows

    run(tmp_path / "d", episodes=9)  # three shards
    cfg = load_config(None, ["model.history=3", "model.horizon=2"])
    streamed = load_windows(tmp_path / "d", cfg)
    data = read_dataset(tmp_path / "d")
    whole = make_windows(data.frames, data.steps, data.frames_per_step, 1.0, history=3,
                         horizon=2, n_slots=cfg.model.vehicles, stride=cfg.model.stride)
    whole.arrays["lane_centers"] = lane_centers_ego(
        lane_medians(data.frames["y"], data.frames["lane"]), whole.arrays["ego_pose"])
    assert streamed.arrays.keys() == whole.arrays.keys()
    assert len(np.unique(streamed.arrays["episode"])) > 3
    for name, values in whole.arrays.items():
        assert np.array_equal(streamed.arrays[name], values, equal_nan=True), name
