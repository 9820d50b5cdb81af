import numpy as np
import pytest

from pipeline.dataset import DatasetError, complete_shards, read_dataset, shard_files
from pipeline.rollouts import PolicySpec, check_policies, collect, plan_episode

ENV = "highway-fast-v0"
CONFIG = {"duration": 4, "vehicles_count": 10}
POLICIES = [("rule", 0.2, 2.0), ("idle", 0.0, 1.0), ("random", 0.0, 1.0)]


def run(out_dir, workers=1, seed=7, episodes=5, policies=POLICIES, config=CONFIG):
    return collect(out_dir, ENV, config, policies, episodes, seed, workers=workers,
                   episodes_per_shard=2, progress=False)  # fmt: skip


def assert_same_dataset(a, b):
    for table in ("frames", "steps"):
        left, right = getattr(a, table), getattr(b, table)
        assert left.keys() == right.keys()
        for name in left:
            np.testing.assert_array_equal(left[name], right[name], err_msg=f"{table}.{name}")


def test_plan_depends_only_on_seed_and_episode():
    specs = check_policies(POLICIES)
    assert plan_episode(3, 10, specs) == plan_episode(3, 10, specs)
    plans = [plan_episode(3, e, specs) for e in range(200)]
    assert len({p.env_seed for p in plans}) == 200
    share = np.mean([p.policy.name == "rule" for p in plans])
    assert 0.35 < share < 0.65  # weight 2 of 4


def test_bad_policies_are_refused():
    with pytest.raises(ValueError, match="unknown policy 'fast'"):
        check_policies([("fast", 0.0, 1.0)])
    with pytest.raises(ValueError, match="weight"):
        check_policies([PolicySpec("rule", 0.0, 0.0)])


def test_one_and_two_workers_give_identical_datasets(tmp_path):
    stats_one = run(tmp_path / "one", workers=1)
    stats_two = run(tmp_path / "two", workers=2)
    one, two = read_dataset(tmp_path / "one"), read_dataset(tmp_path / "two")
    assert_same_dataset(one, two)
    assert stats_one.episodes == stats_two.episodes == 5
    assert stats_one.steps == len(one.steps["step"]) and stats_one.frames == len(one.frames["x"])
    assert set(one.steps["policy"]) <= {"rule+eps0.2", "idle", "random"}
    assert one.manifest["shards"] == two.manifest["shards"]
    assert len(one.manifest["shards"]) == 3


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    run(tmp_path / "a", seed=1, episodes=2)
    run(tmp_path / "b", seed=1, episodes=2)
    run(tmp_path / "c", seed=2, episodes=2)
    a, b, c = (read_dataset(tmp_path / name) for name in "abc")
    assert_same_dataset(a, b)
    assert not np.array_equal(a.frames["x"][:40], c.frames["x"][:40])


def test_resume_keeps_finished_shards_and_completes_the_rest(tmp_path):
    run(tmp_path / "ref")
    out = tmp_path / "resumed"
    run(out)
    shard_files(out, 1)[1].unlink()  # as if killed while writing shard 1
    (out / "dataset.json").write_text(
        (out / "dataset.json").read_text().replace('"complete": true', '"complete": false')
    )
    kept = {s: [p.stat().st_mtime_ns for p in shard_files(out, s)] for s in (0, 2)}
    stats = run(out)
    assert stats.shards_reused == 2 and stats.episodes_collected == 2 and stats.episodes == 5
    assert {s: [p.stat().st_mtime_ns for p in shard_files(out, s)] for s in (0, 2)} == kept
    assert complete_shards(out) == [0, 1, 2]
    assert_same_dataset(read_dataset(out), read_dataset(tmp_path / "ref"))


def test_resume_with_other_settings_is_refused(tmp_path):
    run(tmp_path, episodes=2)
    with pytest.raises(ValueError, match="another seed"):
        run(tmp_path, episodes=2, seed=8)


def test_collision_rate_per_policy(tmp_path):
    dense = {"duration": 6, "vehicles_count": 15, "vehicles_density": 2.0}
    stats = run(tmp_path, episodes=4, policies=[("idle", 0.0, 1.0)], config=dense)
    data = read_dataset(tmp_path)
    crashed = [data.steps["collision"][data.steps["episode"] == e].any() for e in range(4)]
    assert stats.collision_rate == pytest.approx(np.mean(crashed)) and stats.collision_rate > 0
    assert stats.collision_rate_by_policy == {"idle": stats.collision_rate}
    assert stats.summary()["collision_rate/idle"] == stats.collision_rate


def test_a_killed_collect_is_completed_by_running_it_again(tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    script = (
        "from pipeline.rollouts import collect;"
        f"collect({str(out)!r}, {ENV!r}, {CONFIG!r}, {POLICIES!r}, 24, 7,"
        " episodes_per_shard=2, progress=False)"
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not complete_shards(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    done_before = complete_shards(out)
    assert 0 < len(done_before) < 12  # killed mid-run, with some shards on disk
    with pytest.raises(DatasetError, match="incomplete"):
        read_dataset(out)
    stats = collect(out, ENV, CONFIG, POLICIES, 24, 7, episodes_per_shard=2, progress=False)
    assert stats.shards_reused == len(done_before) and stats.episodes == 24
    reference = collect(tmp_path / "ref", ENV, CONFIG, POLICIES, 24, 7, episodes_per_shard=2,
                        progress=False)  # fmt: skip
    assert_same_dataset(read_dataset(out), read_dataset(tmp_path / "ref"))
    assert reference.steps == stats.steps
