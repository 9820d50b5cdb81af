"""Recorded data through the stages: a simulator-format dataset re-encoded as NGSIM
(pipeline/recorded/export.py), ingested with the ngsim preset, trained and evaluated on
held-out time ranges; plus the group split."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.dataset import read_dataset, write_manifest, write_shard
from pipeline.recorded.export import export
from pipeline.windows import split_episodes

ROOT = Path(__file__).resolve().parents[3]
EPISODES, VEHICLES, SIM_HZ, SECONDS = 3, 5, 5, 20


def synthetic_traffic(episode: int) -> dict[str, np.ndarray]:
    """Frames of one simulator-like episode: VEHICLES cars on 3 lanes (4 m apart, +y to the
    right), speeds oscillating around 20-28 m/s, car 2 moving one lane left at t = 6..8 s."""
    t = np.arange(SECONDS * SIM_HZ + 1) / SIM_HZ
    columns: dict[str, list] = {k: [] for k in ("frame", "vehicle_id", "x", "y", "vx", "vy",
                                                "heading", "lane")}
    for v in range(VEHICLES):
        base, amp = 20 + 2 * v, 1.0 + 0.3 * episode
        vx = base + amp * np.sin(0.4 * t + v)
        x = 15.0 * v + base * t - amp / 0.4 * (np.cos(0.4 * t + v) - np.cos(v))
        lane = np.full(len(t), v % 3)
        y = 4.0 * lane
        vy = np.zeros(len(t))
        if v == 2:
            shift = np.clip((t - 6) / 2, 0, 1)
            y, vy = y - 4.0 * shift, np.where((t > 6) & (t < 8), -2.0, 0.0)
            lane = np.where(shift >= 0.5, lane - 1, lane)
        for name, values in (("frame", np.arange(len(t))), ("vehicle_id", np.full(len(t), v)),
                             ("x", x), ("y", y), ("vx", vx), ("vy", vy),
                             ("heading", np.arctan2(vy, vx)), ("lane", lane)):
            columns[name].append(values)
    frames = {k: np.concatenate(v) for k, v in columns.items()}
    order = np.lexsort((frames["vehicle_id"], frames["frame"]))
    frames = {k: v[order] for k, v in frames.items()}
    n = len(frames["frame"])
    frames |= {"episode": np.full(n, episode), "time": frames["frame"] / SIM_HZ,
               "is_ego": frames["vehicle_id"] == 0, "length": np.full(n, 5.0),
               "width": np.full(n, 2.0), "crashed": np.zeros(n, bool)}
    return frames


def steps_of(episode: int) -> dict[str, np.ndarray]:
    k = np.arange(SECONDS)
    return {"episode": np.full(len(k), episode), "step": k, "first_frame": k * SIM_HZ,
            "action": np.ones(len(k)), "reward": np.zeros(len(k)),
            "collision": np.zeros(len(k), bool), "terminated": np.zeros(len(k), bool),
            "truncated": k == k[-1], "policy": np.full(len(k), "rule")}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    (root / "sim").mkdir()
    shards = [write_shard(root / "sim", e, synthetic_traffic(e), steps_of(e))
              for e in range(EPISODES)]
    write_manifest(root / "sim", "highway-fast-v0", {}, SIM_HZ, 1, shards)
    csv = root / "ngsim.csv"
    rows = export(root / "sim", csv, "ngsim", frequency=10, gap=30)
    return root, csv, rows


def recorded_overrides(workdir: Path, csv: Path) -> list[str]:
    return [f"workdir={workdir}", "tracking.enabled=false", "ingest.source=recorded",
            "ingest.recorded.preset=ngsim", f"ingest.recorded.path={csv}",
            "ingest.recorded.scene_seconds=10", "ingest.recorded.ego_min_seconds=3"]


def test_export_writes_the_ngsim_layout(exported):
    _, csv, rows = exported
    header = csv.read_text().splitlines()[0].split(",")
    assert header[:6] == ["Vehicle_ID", "Frame_ID", "Total_Frames", "Global_Time", "Local_X",
                          "Local_Y"]
    assert rows == EPISODES * VEHICLES * (SECONDS * 10 + 1)  # 5 Hz resampled to 10 Hz


def test_ngsim_export_reads_back_to_the_simulator_states(exported, tmp_path):
    from pipeline.config import RecordedConfig
    from pipeline.recorded import ingest_recorded

    root, csv, _ = exported
    cfg = RecordedConfig(path=str(csv), preset="ngsim", scene_seconds=10, ego_min_seconds=3)
    summary = ingest_recorded(tmp_path / "d", cfg, seed=0)
    # ids restart every episode, as in NGSIM: the 30 s gaps split them into new tracks
    assert summary["gap_splits"] == (EPISODES - 1) * VEHICLES
    assert summary["scenes"] == EPISODES * 2 and summary["episodes"] == EPISODES * 2 * VEHICLES
    back, sim = read_dataset(tmp_path / "d").frames, read_dataset(root / "sim").frames
    # vehicle 3 of episode 0 at t = 4 s (an original 5 Hz frame): same centre and velocity
    b = np.flatnonzero((back["vehicle_id"] == 4) & np.isclose(back["time"], 4.0))[0]
    s = np.flatnonzero((sim["episode"] == 0) & (sim["vehicle_id"] == 3) & (sim["frame"] == 20))[0]
    for name, tol in (("x", 2e-3), ("y", 2e-3), ("vx", 0.05), ("vy", 0.05)):
        assert back[name][b] == pytest.approx(sim[name][s], abs=tol), name


def test_a_killed_recorded_ingest_is_redone_in_a_fresh_directory(exported, tmp_path):
    from pipeline import artifacts
    from pipeline.config import load_config
    from pipeline.dataset import shard_files
    from pipeline.runner import experiment_root, key_of
    from pipeline.stages import ingest

    _, csv, _ = exported
    debug = ROOT / "configs" / "debug.yaml"
    cfg = load_config(debug, recorded_overrides(tmp_path, csv))
    assert not ingest.STAGE.resumable(cfg)  # simulator collection alone keeps shards
    assert ingest.STAGE.resumable(load_config(debug, [f"workdir={tmp_path}"]))
    key = key_of(ingest.STAGE, cfg, {})
    stale = shard_files(artifacts.partial_dir(experiment_root(cfg), "ingest", key) / "dataset",
                        99)[0]
    stale.parent.mkdir(parents=True)
    stale.write_text("left by a killed run")
    assert main(["ingest", str(debug), *recorded_overrides(tmp_path, csv)]) == 0
    done = tmp_path / "debug" / "ingest" / key
    assert not shard_files(done / "dataset", 99)[0].exists()
    assert read_dataset(done / "dataset").manifest["complete"] is True


def test_a_recording_edited_in_place_gets_a_new_ingest_key(exported, tmp_path):
    from pipeline.config import load_config
    from pipeline.runner import key_of
    from pipeline.stages import ingest

    _, csv, _ = exported
    copy = tmp_path / "ngsim.csv"
    copy.write_bytes(csv.read_bytes())
    cfg = load_config(ROOT / "configs" / "debug.yaml", recorded_overrides(tmp_path, copy))
    before = key_of(ingest.STAGE, cfg, {})
    assert key_of(ingest.STAGE, cfg, {}) == before  # same bytes, same key
    lines = copy.read_text().splitlines()
    copy.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # one row fewer, same path
    assert key_of(ingest.STAGE, cfg, {}) != before


def test_train_and_evaluate_on_recorded_data_hold_out_time_ranges(exported, tmp_path):
    _, csv, _ = exported
    debug = str(ROOT / "configs" / "debug.yaml")
    assert main(["evaluate", debug, *recorded_overrides(tmp_path, csv)]) == 0
    (ingest_dir,) = (tmp_path / "debug" / "ingest").iterdir()  # no shifted sets collected
    (train_dir,) = (tmp_path / "debug" / "train").iterdir()
    (evaluate_dir,) = (tmp_path / "debug" / "evaluate").iterdir()
    manifest = json.loads((ingest_dir / "dataset" / "dataset.json").read_text())
    groups = np.asarray(manifest["recorded"]["episode_groups"])
    splits = json.loads((train_dir / "splits.json").read_text())
    scenes = {name: set(groups[ids].tolist()) for name, ids in splits.items()}
    assert not scenes["train"] & scenes["test"] and not scenes["train"] & scenes["val"]
    assert not scenes["val"] & scenes["test"]
    assert sum(len(v) for v in scenes.values()) == EPISODES * 2
    summary = json.loads((evaluate_dir / "summary.json").read_text())
    assert summary["fde_1s"] > 0 and summary["cv_fde_3s"] > 0
    assert summary["risk_auroc"] is None  # collision labels are unknown: nothing to score
    assert not any(key.startswith(("dense/", "merge/")) for key in summary)
    assert "held-out time ranges" in (evaluate_dir / "report.md").read_text()


def test_group_split_keeps_each_group_whole_and_is_seeded():
    episodes = np.arange(40)
    groups = episodes // 4  # 10 scenes of 4 egos
    a = split_episodes(episodes, 0.2, 0.2, seed=1, groups=groups)
    b = split_episodes(episodes, 0.2, 0.2, seed=1, groups=groups)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [len(np.unique(groups[a[k]])) for k in ("test", "val", "train")] == [2, 2, 6]
    for name in a:
        assert np.isin(episodes[np.isin(groups, groups[a[name]])], a[name]).all()
    with pytest.raises(ValueError, match="2 time ranges"):
        split_episodes(episodes[:8], 0.3, 0.3, seed=0, groups=groups[:8])
