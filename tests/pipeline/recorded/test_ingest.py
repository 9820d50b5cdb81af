"""Recorded trajectories -> the dataset schema: the three hand-written fixtures.

Fixtures (tests/fixtures/recorded, values are simple formulas of t, checked by hand here):
- highd/01_tracks.csv: 25 Hz, metres, box corner (x, y) in image axes (+y = driver's
  right); car 1 cruises at 30 m/s in lane 5, truck 2 brakes at 1.5 m/s^2 in lane 6, car 3
  changes from lane 6 to lane 5 (to its left, 3.75 m) during t = 1..3 s, car 4 accelerates
  at 2 m/s^2. Box `width` (along x) is the length: 4.5 m cars, 12 m truck.
- ngsim/*.csv: 10 Hz, feet, front centre (Local_Y along, Local_X to the right), Global_Time
  ms; 11 cruises at 50 ft/s, 12 moves right by 12 ft during t = 1..3 s at 60 ft/s, 13 brakes
  at 5 ft/s^2.
- generic/rotated_road.csv: 5 Hz, ISO times, text ids, map axes (+y = north = left) with
  the road at 30 degrees, yaw in degrees, centre positions, no velocities, no lanes; car-b
  overtakes car-a by moving 3.5 m to the left during t = 1..3 s; car-c is 30 m ahead of
  car-a in the left lane.
"""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import RecordedConfig, load_config
from pipeline.dataset import read_dataset
from pipeline.recorded import ingest_recorded
from pipeline.recorded.scenes import FASTER, IDLE, LANE_LEFT, LANE_RIGHT, SLOWER

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "recorded"
FOOT = 0.3048
GENERIC_COLUMNS = {"time": "timestamp", "track": "object", "x": "east_m", "y": "north_m",
                   "heading": "yaw_deg", "length": "len_m", "width": "wid_m"}


def preset_config(name: str, path: Path) -> RecordedConfig:
    """The shipped preset config, pointed at a fixture (every vehicle is 4 s in view)."""
    cfg = load_config(ROOT / "configs" / f"recorded_{name}.yaml",
                      [f"ingest.recorded.path={path}", "ingest.recorded.ego_min_seconds=3",
                       "ingest.recorded.egos_per_scene=0"])
    return cfg.ingest.recorded


def generic_config(**kw) -> RecordedConfig:
    return RecordedConfig(path=str(FIXTURES / "generic" / "rotated_road.csv"),
                          columns=GENERIC_COLUMNS, time_unit="iso", heading_unit="deg",
                          ego_min_seconds=3, **kw)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("recorded")
    configs = {"highd": preset_config("highd", FIXTURES / "highd"),
               "ngsim": preset_config("ngsim", FIXTURES / "ngsim"),
               "generic": generic_config()}
    summaries = {name: ingest_recorded(root / name, cfg, seed=0) for name, cfg in configs.items()}
    return {name: read_dataset(root / name) for name in configs}, summaries


def rows_at(data, vehicle: int, t: float, episode: int = 0) -> dict[str, float]:
    f = data.frames
    (row,) = np.flatnonzero((f["episode"] == episode) & (f["vehicle_id"] == vehicle)
                            & np.isclose(f["time"], t))
    return {name: float(values[row]) for name, values in f.items()}


def actions_by_ego(data) -> dict[int, list[int]]:
    f, s = data.frames, data.steps
    egos = {int(e): int(f["vehicle_id"][(f["episode"] == e) & f["is_ego"]][0])
            for e in np.unique(s["episode"])}
    return {egos[int(e)]: s["action"][s["episode"] == e].tolist() for e in egos}


# ---------------------------------------------------------------- conversion to the schema


def test_highd_corner_to_centre_and_25hz_resampled_to_10hz(datasets):
    data, summary = datasets[0]["highd"], datasets[1]["highd"]
    assert data.simulation_frequency == 10 and data.frames_per_step == 10
    assert summary["tracks"] == 4 and summary["episodes"] == 4 and summary["steps"] == 16
    car = rows_at(data, 1, 0.5)  # t = 0.5 s is between two 25 Hz samples
    assert car["x"] == pytest.approx(10 + 30 * 0.5 + 4.5 / 2) and car["y"] == pytest.approx(22.0)
    assert (car["vx"], car["vy"], car["heading"]) == (30.0, 0.0, 0.0)
    assert (car["length"], car["width"], car["lane"]) == (4.5, pytest.approx(1.8), 5)
    truck = rows_at(data, 2, 0.5)  # braking: x = 40 + 25 t - 0.75 t^2 (corner)
    assert truck["x"] == pytest.approx(40 + 12.5 - 0.1875 + 6.0, abs=1e-3)
    assert truck["vx"] == pytest.approx(25 - 0.75) and truck["length"] == 12.0
    turning = rows_at(data, 3, 2.0)  # mid lane change: heading from the given velocities
    assert turning["heading"] == pytest.approx(math.atan2(-1.875, 28.0), abs=1e-6)
    assert turning["y"] == pytest.approx(25.75 - 1.875, abs=1e-4)


def test_highd_frame_rate_comes_from_recording_meta(datasets):
    data = datasets[0]["highd"]
    times = np.unique(data.frames["time"])
    assert times[0] == 0.0 and times[-1] == pytest.approx(4.0)  # frames 1..101 at 25 Hz
    assert len(times) == 41


def test_ngsim_feet_front_centre_and_derived_velocities(datasets):
    data = datasets[0]["ngsim"]
    cruise = rows_at(data, 11, 2.0)
    assert cruise["x"] == pytest.approx((100 + 50 * 2 - 15 / 2) * FOOT, abs=1e-4)
    assert cruise["y"] == pytest.approx(18 * FOOT, abs=1e-5)
    assert cruise["vx"] == pytest.approx(50 * FOOT, abs=1e-4) and cruise["vy"] == 0.0
    assert (cruise["length"], cruise["width"]) == (pytest.approx(15 * FOOT),
                                                   pytest.approx(6 * FOOT))
    changing = rows_at(data, 12, 2.0)  # front at (160, 24) ft heading atan(6/60), 16 ft long
    heading = math.atan2(6, 60)
    assert changing["heading"] == pytest.approx(heading, abs=1e-5)
    assert changing["x"] == pytest.approx((160 - 8 * math.cos(heading)) * FOOT, abs=1e-4)
    assert changing["y"] == pytest.approx((24 - 8 * math.sin(heading)) * FOOT, abs=1e-4)
    assert (changing["vx"], changing["vy"]) == (pytest.approx(60 * FOOT, abs=1e-4),
                                                pytest.approx(6 * FOOT, abs=1e-4))
    braking = rows_at(data, 13, 2.0)  # v = 70 - 5 t ft/s, exact by central differences
    assert braking["vx"] == pytest.approx(60 * FOOT, abs=1e-4)
    assert (changing["lane"], braking["lane"]) == (3, 1)


def test_generic_rotated_map_degrees_iso_time_and_upsampling(datasets):
    data = datasets[0]["generic"]
    assert sorted(np.unique(data.frames["vehicle_id"])) == [0, 1, 2]  # car-a, car-b, car-c
    car = rows_at(data, 0, 0.5)  # between two 5 Hz samples; y mirrored (+y = right)
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    assert car["x"] == pytest.approx(100 + 10 * c, abs=1e-3)
    assert car["y"] == pytest.approx(-(200 + 10 * s), abs=1e-3)
    assert car["heading"] == pytest.approx(-math.pi / 6, abs=1e-5)
    assert car["vx"] == pytest.approx(20 * c, abs=2e-3) and car["vy"] == pytest.approx(
        -20 * s, abs=2e-3)
    assert car["lane"] == 0 and car["time"] == pytest.approx(0.5)
    assert len(np.unique(data.frames["time"])) == 41  # 4 s at 10 Hz from 5 Hz samples


def test_steps_hold_unknown_collisions_and_the_manifest_says_so(datasets):
    data = datasets[0]["ngsim"]
    steps = data.steps
    assert not steps["collision"].any() and not steps["terminated"].any()
    assert (steps["reward"] == 0).all() and set(steps["policy"]) == {"recorded"}
    assert steps["truncated"].sum() == len(np.unique(steps["episode"]))
    info = data.manifest["recorded"]
    assert info["collision_labels"] == "unknown" and info["lanes"] is True
    assert info["episode_groups"] == [0, 0, 0] and len(info["scenes"]) == 1


# ---------------------------------------------------------------- inferred meta-actions


@pytest.mark.parametrize("name, labels", [
    ("highd", {1: [IDLE] * 4, 2: [SLOWER] * 4, 3: [IDLE, LANE_LEFT, LANE_LEFT, IDLE],
               4: [FASTER] * 4}),
    ("ngsim", {11: [IDLE] * 4, 12: [IDLE, LANE_RIGHT, LANE_RIGHT, IDLE], 13: [SLOWER] * 4}),
    ("generic", {0: [IDLE] * 4, 1: [IDLE, LANE_LEFT, LANE_LEFT, IDLE], 2: [IDLE] * 4}),
])
def test_inferred_meta_actions_match_the_hand_labels(datasets, name, labels):
    assert actions_by_ego(datasets[0][name]) == labels


def test_lane_change_threshold_is_the_configured_lateral_speed(tmp_path):
    # car-b moves sideways at 1.75 m/s: above the threshold it is idle, and the neighbours'
    # steady headings keep car-a and car-c idle whatever the threshold
    ingest_recorded(tmp_path / "d", generic_config(lateral_speed=2.0), seed=0)
    assert actions_by_ego(read_dataset(tmp_path / "d"))[1] == [IDLE] * 4


# ---------------------------------------------------------------- windows on a rotated road


def test_ego_frame_rotates_with_the_ego_heading_on_a_rotated_road(datasets, tmp_path):
    from pipeline.stage_io import load_windows

    cfg = load_config(ROOT / "configs" / "debug.yaml", ["model.history=3", "model.vehicles=3"])
    windows = load_windows(datasets[0]["generic"].path, cfg)
    a = windows.arrays
    (k,) = np.flatnonzero((a["episode"] == 0) & (a["step"] == 1))  # ego car-a at t = 1 s
    last = a["hist"][k, -1]  # (N, D) at t0: ego, then nearest first
    assert np.allclose(last[0, :4], [0, 0, 20, 0], atol=2e-3)
    # car-b, same lane behind, starting its move left: the central difference at the kink
    # averages 0 and 1.75 m/s sideways (-y is the ego's left)
    assert np.allclose(last[1, :4], [-15, 0, 25, -0.875], atol=2e-3)
    assert np.allclose(last[2, :4], [32, -3.5, 22, 0], atol=2e-3)  # car-c, ahead on the left
    assert not a["label_mask"].any()  # collision labels unknown: masked
    assert np.isnan(a["lane_centers"]).all()  # no lane column: no lane-keeping targets
    assert (a["group"] == 0).all()


def test_recorded_lane_centres_follow_the_road_axis(datasets):
    from pipeline.stage_io import load_windows

    cfg = load_config(ROOT / "configs" / "debug.yaml", ["model.history=3"])
    a = load_windows(datasets[0]["highd"].path, cfg).arrays
    (k,) = np.flatnonzero((a["episode"] == 0) & (a["step"] == 0))  # car 1 at y = 22, lane 5
    centres = np.sort(a["lane_centers"][k][np.isfinite(a["lane_centers"][k])])
    assert np.allclose(centres, [0.0, 3.75], atol=1e-3)


def test_each_window_gets_the_lanes_of_its_own_recording():
    from types import SimpleNamespace

    from pipeline.recorded.windows import lane_centers

    # recording "east": road along +x, lanes 0 and 1 at y = 0 and 4; recording "north":
    # road along +y, lanes 0 and 1 at x = 10 and 13.5, so lane 1 is the driver's left
    east = {"episode": [0] * 4, "x": [0, 5, 0, 5], "y": [0, 0, 4, 4], "lane": [0, 0, 1, 1],
            "heading": [0.0] * 4}
    north = {"episode": [1] * 4, "x": [10, 10, 13.5, 13.5], "y": [0, 5, 0, 5],
             "lane": [0, 0, 1, 1], "heading": [np.pi / 2] * 4}
    frames = {k: np.array(east[k] + north[k], dtype=float) for k in east}
    frames["episode"] = frames["episode"].astype(np.int64)
    scenes = [{"recording": "east"}, {"recording": "north"}]
    data = SimpleNamespace(manifest={"recorded": {"lanes": True, "scenes": scenes}},
                           frames=frames)
    ego_pose = np.array([[3.0, 4.0, 0.0], [10.0, 2.0, np.pi / 2]])  # an ego in lane 1 / lane 0
    out = lane_centers(data, np.array([0, 1]), np.array([0, 1]), ego_pose)
    assert out.shape == (2, 2) and out.dtype == np.float32
    assert np.allclose(out, [[-4.0, 0.0], [0.0, -3.5]], atol=1e-5)


# ---------------------------------------------------------------- gaps and near misses


def write_csv(path: Path, rows: list[tuple]) -> Path:
    """A generic CSV in seconds and metres, image axes: time, id, x, y (centre), len, wid."""
    lines = ["t,id,x,y,len,wid"] + [",".join(f"{v:g}" for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def straight(vehicle: int, times, x0: float, speed: float, y: float = 0.0) -> list[tuple]:
    return [(t, vehicle, x0 + speed * t, y, 5.0, 2.0) for t in times]


def simple_config(path: Path, **kw) -> RecordedConfig:
    return RecordedConfig(path=str(path), y_axis="right", columns={
        "time": "t", "track": "id", "x": "x", "y": "y", "length": "len", "width": "wid"}, **kw)


def test_tracks_split_at_gaps_and_short_gaps_are_interpolated(tmp_path):
    steps = np.round(np.arange(0, 81) / 10, 1)
    rows = straight(3, [t for t in steps if not 4.0 <= t <= 4.2], 0.0, 20.0)  # 0.4 s hole
    rows += straight(7, [t for t in steps if t <= 3.0 or t >= 5.0], 10.0, 25.0, 3.5)  # 2 s
    path = write_csv(tmp_path / "gaps.csv", sorted(rows))
    summary = ingest_recorded(tmp_path / "d", simple_config(path, ego_min_seconds=2.0,
                                                            max_gap=0.5), seed=0)
    assert summary["gap_splits"] == 1 and summary["tracks"] == 3 and summary["episodes"] == 3
    data = read_dataset(tmp_path / "d")
    f = data.frames
    assert set(np.unique(f["vehicle_id"])) == {3, 7, 8}  # 7's second piece gets a new id
    assert f["time"][f["vehicle_id"] == 7].max() == pytest.approx(3.0)
    assert f["time"][f["vehicle_id"] == 8].min() == pytest.approx(5.0)
    filled = rows_at(data, 3, 4.1)  # inside the 0.4 s hole: interpolated
    assert filled["x"] == pytest.approx(82.0, abs=1e-3) and filled["vx"] == pytest.approx(20.0)


def test_near_miss_labels_from_time_to_collision(tmp_path):
    times = np.round(np.arange(0, 31) / 10, 1)
    rows = straight(1, times, 0.0, 20.0)  # follower
    rows += straight(2, times, 30.0, 10.0)  # leader: TTC = (25 - 10 t) / 10 = 2.5 - t
    rows += straight(3, times, 20.0, 0.0, 3.5)  # stopped in the next lane: no overlap
    path = write_csv(tmp_path / "close.csv", sorted(rows))
    ingest_recorded(tmp_path / "d", simple_config(path, ego_min_seconds=2.0, near_miss_ttc=1.0),
                    seed=0)
    data = read_dataset(tmp_path / "d")
    s, f = data.steps, data.frames
    by_ego = {int(f["vehicle_id"][(f["episode"] == e) & f["is_ego"]][0]):
              s["collision"][s["episode"] == e].tolist() for e in np.unique(s["episode"])}
    # TTC < 1 s from t = 1.5 s: step 0 (0..1 s) is clear, steps 1 and 2 are near misses
    assert by_ego == {1: [False, True, True], 2: [False, True, True], 3: [False] * 3}
    assert data.manifest["recorded"]["collision_labels"] == "near_miss"

    from pipeline.stage_io import load_windows

    cfg = load_config(ROOT / "configs" / "debug.yaml", ["model.history=3"])
    a = load_windows(tmp_path / "d", cfg).arrays
    assert np.array_equal(a["label_mask"], a["step_mask"])  # near-miss labels are known


def test_parquet_files_read_like_csv(datasets, tmp_path):
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    source = FIXTURES / "generic" / "rotated_road.csv"
    table = pcsv.read_csv(source, convert_options=pcsv.ConvertOptions(
        column_types={"timestamp": "string"}))
    pq.write_table(table, tmp_path / "rotated_road.parquet")
    cfg = dataclasses.replace(generic_config(), path=str(tmp_path))  # a directory of files
    ingest_recorded(tmp_path / "d", cfg, seed=0)
    again, first = read_dataset(tmp_path / "d").frames, datasets[0]["generic"].frames
    assert all(np.array_equal(again[k], first[k]) for k in first)
