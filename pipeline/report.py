"""`drivecast report`: the headline results, written from the stages' own summaries.

Results are data: for each config, `collect` finds the complete stage directories its
keys name (the same keys `drivecast run` computes) and keeps their `summary.json` figures
in one record, `docs/results/<name>.json`, with the command that reproduces them. `render`
turns the records into the Markdown tables that README.md shows between its
`<!-- results:begin -->` and `<!-- results:end -->` lines; `drivecast report --readme
README.md` rewrites that block, so no figure in it is typed by hand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from pipeline import artifacts
from pipeline.artifacts import Artifacts, write_text_atomic
from pipeline.config import Config
from pipeline.errors import DrivecastError

RESULTS_DIR = Path("docs/results")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
KEPT_STAGES = ("evaluate", "export", "simulate")  # whose summaries a record keeps
POLICIES = ("planner", "actor", "planner+actor", "rule", "idle", "random",
            "oracle")  # closed-loop rows, in this order (those a run drove)
PICTURES = (("evaluate", "imagination_*.gif"), ("simulate", "*_view.gif"))  # docs/pictures.md


class ReportError(DrivecastError):
    """A results record or a README block that cannot be read or written."""


def pipeline_keys(cfg: Config) -> dict[str, Artifacts]:
    """The stage directories `drivecast run` would use for `cfg` (computed, nothing run)."""
    from pipeline.runner import experiment_root, key_of
    from pipeline.stages import PIPELINE

    found: dict[str, Artifacts] = {}
    for stage in PIPELINE:
        key = key_of(stage, cfg, {name: found[name] for name in stage.inputs})
        path = artifacts.final_dir(experiment_root(cfg), stage.name, key)
        found[stage.name] = Artifacts(stage.name, key, path, {})
    return found


def collect(cfg: Config, config_path: str) -> dict:
    """One results record from the complete stage directories of `cfg`."""
    stages = pipeline_keys(cfg)
    summaries = {}
    for name in KEPT_STAGES:
        path = stages[name].path
        if not artifacts.is_complete(path):
            raise ReportError(f"{config_path}: no complete {name} stage at {path}; run "
                              f"`drivecast run {config_path}` with the same workdir first")
        summaries[name] = json.loads((path / artifacts.SUMMARY).read_text())
    return {"name": record_name(config_path), "config": config_path,
            "command": f"drivecast run {config_path}", "date": date.today().isoformat(),
            "keys": {name: a.key for name, a in stages.items()}, "summaries": summaries}


def picture_paths(cfg: Config) -> list[Path]:
    """The pictures of the stage directories of `cfg` (PICTURES), those that exist."""
    stages = pipeline_keys(cfg)
    return [path for stage, pattern in PICTURES
            for path in sorted(stages[stage].path.glob(pattern))]


def record_name(config_path: str) -> str:
    return Path(config_path).stem


def save(record: dict, results_dir: Path) -> Path:
    path = results_dir / f"{record['name']}.json"
    results_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


def load_results(results_dir: Path) -> list[dict]:
    """Every record in `results_dir`, in name order (quickstart first: the default job)."""
    records = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ReportError(f"{path} is not readable JSON ({err})") from None
        if not is_record(record):
            raise ReportError(f"{path} is not a drivecast results record (it needs name, "
                              f"command, date and summaries of {', '.join(KEPT_STAGES)})")
        records.append(record)
    return sorted(records, key=lambda r: (r["name"] != "quickstart", r["name"]))


def is_record(record) -> bool:
    fields = ("name", "command", "date", "summaries")
    return isinstance(record, dict) and all(f in record for f in fields) \
        and isinstance(record["summaries"], dict) \
        and all(isinstance(record["summaries"].get(s), dict) for s in KEPT_STAGES)


# ---------------------------------------------------------------- figures


def collision_cell(figures: dict) -> str:
    """'2/100 (0.6-7.0%)': collisions of episodes with the 95% interval."""
    n = figures["episodes"]
    crashes = round(figures["collision_rate"] * n)
    from evaluation.metrics import wilson_interval

    low, high = wilson_interval(crashes, n)
    return f"{crashes}/{int(n)} ({100 * low:.1f}-{100 * high:.1f}%)"


def policy_figures(simulate: dict, policy: str) -> dict | None:
    prefix = "" if policy == "planner" else f"{policy}/"
    figures = {k[len(prefix):]: v for k, v in simulate.items()
               if k.startswith(prefix) and "/" not in k[len(prefix):]}
    return figures if "collision_rate" in figures else None


def forecast_horizon(evaluate: dict) -> int:
    """3 s where the model forecasts that far, else its longest horizon."""
    seconds = [int(k[4:-1]) for k in evaluate if k.startswith("fde_") and k.endswith("s")]
    return 3 if 3 in seconds else max(seconds)


def number(value, digits: int = 2) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


# ---------------------------------------------------------------- tables


def forecast_table(records: Sequence[dict]) -> list[str]:
    lines = ["| config | held-out windows | FDE (m) | FDE / constant velocity | "
             "risk AUROC | command |", "|---|---|---|---|---|---|"]
    for r in records:
        e = r["summaries"]["evaluate"]
        s = forecast_horizon(e)
        fde, cv = e.get(f"fde_{s}s"), e.get(f"cv_fde_{s}s")
        ratio = fde / cv if fde is not None and cv else None
        lines.append(f"| {r['name']} | {int(e.get('windows', 0))} | {number(fde)} at {s} s | "
                     f"{number(ratio)} | {number(e.get('risk_auroc'), 3)} | "
                     f"`{r['command']}` |")
    return lines


def closed_loop_table(records: Sequence[dict]) -> list[str]:
    lines = ["| config | policy | collisions (95% interval) | mean speed (m/s) | "
             "mean return | decision p50 / p99 (ms) | command |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        simulate = r["summaries"]["simulate"]
        for policy in POLICIES:
            figures = policy_figures(simulate, policy)
            if figures is None:
                continue
            latency = ""
            if "latency_p50_ms" in figures:
                latency = f"{figures['latency_p50_ms']:.1f} / {figures['latency_p99_ms']:.1f}"
            lines.append(f"| {r['name']} | {policy} | {collision_cell(figures)} | "
                         f"{number(figures['mean_speed'])} | {number(figures['mean_return'])} | "
                         f"{latency} | `{r['command']}` |")
    return lines


def render(records: Sequence[dict]) -> str:
    """The README's results block (without its marker lines)."""
    if not records:
        raise ReportError("no results records to report: run `drivecast report CONFIG` first")
    dates = sorted({r["date"] for r in records})
    return "\n".join([
        f"Forecasts on held-out test episodes (FDE: final displacement error of the other "
        f"vehicles; constant velocity is the baseline; measured {', '.join(dates)}):", "",
        *forecast_table(records), "",
        "Closed loop on the evaluation seeds, the learned policies beside the baselines on "
        "the same episodes:", "", *closed_loop_table(records)]) + "\n"


def update_readme(readme: Path, block: str) -> bool:
    """Rewrite the text between the results markers of `readme`; True when it changed."""
    text = readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ReportError(f"{readme} must hold one '{BEGIN}' line followed by one '{END}' line")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    new = f"{head}{BEGIN}\n{block}{END}{tail}"
    if new != text:
        write_text_atomic(readme, new)
    return new != text


def readme_block(readme: Path) -> str:
    """The text between the results markers of `readme` (what `update_readme` wrote)."""
    text = readme.read_text()
    return text.split(BEGIN, 1)[1].split(END, 1)[0].removeprefix("\n")


def report(config_paths: Sequence[str], overrides: Sequence[str], results_dir: Path,
           readme: Path | None) -> str:
    """`drivecast report`: record each config's stage summaries into `results_dir` (and
    name its pictures on stderr), then render every record there (and rewrite `readme`'s
    results block); returns the tables."""
    import sys

    from pipeline.config import load_config

    for config_path in config_paths:
        cfg = load_config(config_path, list(overrides))
        record = collect(cfg, config_path)
        print(f"[report] {config_path}: {save(record, results_dir)}", file=sys.stderr)
        for path in picture_paths(cfg):
            print(f"[report] {config_path} picture: {path}", file=sys.stderr)
    block = render(load_results(results_dir))
    if readme is not None:
        changed = update_readme(readme, block)
        print(f"[report] {readme}: {'rewritten' if changed else 'already up to date'}",
              file=sys.stderr)
    return block
