"""Benchmark of the simulator backends: does EnvPool's native highway drive like highway-env?

Each behaviour policy drives ``ingest.episodes`` episodes on both simulators (recorded
through ``collect``, so the figures are those of the datasets ingest writes): the ego's
collision rate with its 95% Wilson interval, mean speed and decisions per episode (with
95% normal intervals); the two agree on a figure where the intervals overlap. Then the
other vehicles, pooled over every policy's episodes: the two-sample Kolmogorov-Smirnov
statistic and p-value of their speeds and accelerations, and their lane changes per
vehicle-minute with 95% Poisson intervals. (Speed: ``drivecast bench ingest``.)
"""

from __future__ import annotations

import tempfile

import numpy as np

from evaluation.metrics import Z95, wilson_interval
from pipeline.dataset import read_dataset
from pipeline.rollouts import collect

ALIGNMENT_POLICIES = (("idle", 0.0), ("faster", 0.0), ("rule", 0.0), ("rule", 0.2))
BACKENDS = ("highway-env", "envpool")
KS_SAMPLE = 200_000  # values per side the KS test draws (the statistic hardly moves above)


def record(env_id: str, env_config: dict, policy: tuple[str, float], episodes: int, seed: int,
           backend: str, workers: int):
    """(CollectStats, Dataset) of `episodes` episodes of one policy, in a temp dir."""
    with tempfile.TemporaryDirectory() as out_dir:
        stats = collect(out_dir, env_id, env_config, [(*policy, 1.0)], episodes, seed,
                        workers=workers, episodes_per_shard=max(1, episodes // 8),
                        progress=False, backend=backend)  # fmt: skip
        return stats, read_dataset(out_dir)


def mean_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95% normal interval."""
    mean = float(values.mean())
    half = Z95 * float(values.std(ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, mean - half, mean + half


def behaviour(dataset) -> dict[str, float]:
    """The ego per episode: collision rate (95% Wilson interval), mean speed [m/s] before
    any crash and decisions (95% intervals over episodes). Frames of crashed vehicles are
    left out: highway-env records a crashed car braking to the end of the decision, EnvPool
    ends the episode on the crash frame."""
    steps, frames = dataset.steps, dataset.frames
    episodes, decisions = np.unique(steps["episode"], return_counts=True)
    crashed = np.unique(steps["episode"][steps["collision"]])
    ego = frames["is_ego"].astype(bool) & ~frames["crashed"].astype(bool)
    speed = np.hypot(frames["vx"][ego], frames["vy"][ego])
    index = np.searchsorted(episodes, frames["episode"][ego])
    per_episode = np.bincount(index, speed) / np.bincount(index)
    row = {"episodes": float(len(episodes)), "collision_rate": len(crashed) / len(episodes)}
    row["collision_low"], row["collision_high"] = wilson_interval(len(crashed), len(episodes))
    for name, values in (("speed", per_episode), ("decisions", decisions.astype(float))):
        row[name], row[f"{name}_low"], row[f"{name}_high"] = mean_interval(values)
    return row


def others(dataset) -> dict[str, np.ndarray | float]:
    """The other vehicles before any crash: every speed [m/s] and acceleration [m/s^2]
    between consecutive frames, their lane changes and the vehicle-seconds observed."""
    f = dataset.frames
    keep = ~f["is_ego"].astype(bool) & ~f["crashed"].astype(bool)
    order = np.lexsort((f["frame"][keep], f["vehicle_id"][keep], f["episode"][keep]))
    episode, vehicle = f["episode"][keep][order], f["vehicle_id"][keep][order]
    speed = np.hypot(f["vx"][keep][order], f["vy"][keep][order]).astype(float)
    lane = f["lane"][keep][order]
    same = (episode[1:] == episode[:-1]) & (vehicle[1:] == vehicle[:-1])
    hz = dataset.simulation_frequency
    return {"speed": speed, "acceleration": (np.diff(speed) * hz)[same],
            "lane_changes": float(np.count_nonzero(np.diff(lane)[same])),
            "seconds": float(np.count_nonzero(same)) / hz}


def ks_test(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[float, float]:
    """Two-sample KS statistic and p-value, on at most KS_SAMPLE values of each side."""
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(seed)
    a, b = (x if len(x) <= KS_SAMPLE else rng.choice(x, KS_SAMPLE, replace=False)
            for x in (a, b))
    result = ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


def lane_change_rate(sample: dict) -> tuple[float, float, float]:
    """Lane changes per vehicle-minute with a 95% normal-approximation Poisson interval."""
    minutes = sample["seconds"] / 60.0
    rate, half = sample["lane_changes"] / minutes, Z95 * np.sqrt(sample["lane_changes"]) / minutes
    return rate, rate - half, rate + half


def alignment(env_id: str, env_config: dict, seed: int, episodes: int,
              workers: int) -> tuple[list[dict], dict[str, dict]]:
    """Ego rows per policy and backend, and each backend's other-vehicle samples."""
    rows, samples = [], {backend: [] for backend in BACKENDS}
    for policy in ALIGNMENT_POLICIES:
        for backend in BACKENDS:
            _, dataset = record(env_id, env_config, policy, episodes, seed, backend, workers)
            label = policy[0] if policy[1] == 0 else f"{policy[0]} eps {policy[1]}"
            rows.append({"policy": label, "backend": backend, **behaviour(dataset)})
            samples[backend].append(others(dataset))
    return rows, {backend: merge_samples(parts) for backend, parts in samples.items()}


def merge_samples(parts: list[dict]) -> dict:
    return {key: (np.concatenate([p[key] for p in parts]) if isinstance(parts[0][key], np.ndarray)
                  else sum(p[key] for p in parts)) for key in parts[0]}


def others_figures(samples: dict[str, dict], seed: int) -> dict[str, float]:
    a, b = samples["highway-env"], samples["envpool"]
    figures = {}
    for name in ("speed", "acceleration"):
        for backend in BACKENDS:
            values = samples[backend][name]
            figures[f"others/{name}_mean/{backend}"] = float(values.mean())
            figures[f"others/{name}_std/{backend}"] = float(values.std())
        figures[f"others/{name}_ks"], figures[f"others/{name}_ks_p"] = ks_test(a[name], b[name],
                                                                              seed)
    for backend in BACKENDS:
        rate, low, high = lane_change_rate(samples[backend])
        figures[f"others/lane_changes_per_min/{backend}"] = rate
        figures[f"others/lane_changes_per_min_low/{backend}"] = low
        figures[f"others/lane_changes_per_min_high/{backend}"] = high
    return figures


def interval(row: dict, name: str, digits: int = 2) -> str:
    low, high = row[f"{name}_low"], row[f"{name}_high"]
    return f"{row[name]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def print_alignment(rows: list[dict]) -> None:
    print(f"{'policy':<12} {'backend':<12} {'episodes':>8}  {'collisions % [95% CI]':<24}"
          f"{'ego speed m/s [95% CI]':<26}{'decisions [95% CI]':<22}")
    for row in rows:
        print(f"{row['policy']:<12} {row['backend']:<12} {row['episodes']:>8.0f}  "
              f"{collision_cell(row):<24}"
              f"{interval(row, 'speed'):<26}{interval(row, 'decisions', digits=1):<22}")


def collision_cell(row: dict) -> str:
    return (f"{100 * row['collision_rate']:.1f} [{100 * row['collision_low']:.1f}, "
            f"{100 * row['collision_high']:.1f}]")


def print_others(figures: dict[str, float]) -> None:
    print(f"{'other vehicles':<24} {'highway-env':>12} {'envpool':>12}  {'KS D':>6} {'p':>8}")
    for name in ("speed", "acceleration"):
        for stat in ("mean", "std"):
            cells = [figures[f"others/{name}_{stat}/{b}"] for b in BACKENDS]
            test = (f"  {figures[f'others/{name}_ks']:6.3f} {figures[f'others/{name}_ks_p']:8.2g}"
                    if stat == "mean" else "")
            print(f"{name + ' ' + stat:<24} {cells[0]:>12.3f} {cells[1]:>12.3f}{test}")
    cells = [f"{figures[f'others/lane_changes_per_min/{b}']:.3f} "
             f"[{figures[f'others/lane_changes_per_min_low/{b}']:.3f}, "
             f"{figures[f'others/lane_changes_per_min_high/{b}']:.3f}]" for b in BACKENDS]
    print(f"{'lane changes / min':<24} {cells[0]}  {cells[1]}")


def bench_backend(env_id: str = "highway-fast-v0", env_config: dict | None = None,
                  seed: int = 0, episodes: int = 100, workers: int = 2) -> dict[str, float]:
    """Print and return the alignment tables on `episodes` episodes per policy and
    simulator."""
    rows, samples = alignment(env_id, dict(env_config or {}), seed, episodes, workers)
    print_alignment(rows)
    print()
    figures = others_figures(samples, seed)
    print_others(figures)
    for row in rows:
        key = f"{row['policy'].replace(' ', '_')}/{row['backend']}"
        figures |= {f"{name}/{key}": row[name] for name in ("collision_rate", "speed",
                                                               "decisions")}
    return figures
