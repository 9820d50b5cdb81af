"""The teaching example: a slippery gridworld whose world model is learned by counting.

Each round the agent plans on its learned model (value iteration), collects episodes in the
true environment with an epsilon-greedy version of that plan, adds the transitions to its
counts and plans again. After every round the greedy policy of the learned model is scored
exactly in the true environment next to the optimal policy computed from the true
transition probabilities. Shape letters: Z states, A actions.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path

import numpy as np

from evaluation.gridworld_env import (
    GridWorld,
    PolicyScore,
    evaluate_policy,
    mean_tv_over_visited,
    parse_map,
    rollout,
    sample_model_rollout,
)
from models.gridworld import CountModel, greedy_policy, most_likely_path, value_iteration

# A wall blocks the straight line from S to G; the agent has to go round it along the top
# or the bottom corridor (10 moves either way) and must not get lost in the pockets between.
DEFAULT_MAP = """\
#########
#.......#
#.#####.#
#S..#..G#
#.#.#.#.#
#.......#
#########
"""

LogMetric = Callable[[str, float, int], None]


class UnseenPrior(str, Enum):
    """What the model assumes about a (square, action) pair it never tried (self-loop)."""

    WALL = "wall"  # stays put and pays step_reward, like bumping into a wall
    OPTIMISTIC = "optimistic"  # stays put and pays goal_reward every step (R-max style)


@dataclass(frozen=True)
class GridworldConfig:
    """Settings of ``drivecast gridworld``."""

    map_text: str = DEFAULT_MAP  # '#' wall, 'S' start, 'G' goal, '.' floor
    slip: float = 0.2  # probability that a move goes to one of the two sideways squares
    rounds: int = 8  # plan -> collect -> count cycles
    episodes_per_round: int = 3  # real episodes collected per round
    epsilon: float = 0.2  # probability of a uniformly random action while collecting
    gamma: float = 0.95  # discount of value iteration and of the reported return
    seed: int = 0  # seeds exploration, slips and the imagination rollout
    max_steps: int = 50  # moves per episode before it is cut off (counts as failure)
    step_reward: float = -0.01  # reward of every move that does not reach the goal
    goal_reward: float = 1.0  # reward of the move that reaches the goal
    unseen_prior: UnseenPrior = UnseenPrior.WALL  # see UnseenPrior
    imagination_episodes: int = 3  # episodes per side in imagination.gif
    gif_seconds_per_frame: float = 0.25  # frame time of imagination.gif (rounds.gif: 1 s)

    def __post_init__(self) -> None:
        if not isinstance(self.unseen_prior, UnseenPrior):
            object.__setattr__(self, "unseen_prior", _parse_prior(self.unseen_prior))
        _require(0.0 <= self.slip <= 1.0, "slip", "be in [0, 1]", self.slip)
        _require(self.rounds >= 1, "rounds", "be at least 1", self.rounds)
        _require(self.episodes_per_round >= 1, "episodes_per_round", "be at least 1",
                 self.episodes_per_round)
        _require(0.0 <= self.epsilon <= 1.0, "epsilon", "be in [0, 1]", self.epsilon)
        _require(0.0 <= self.gamma < 1.0, "gamma", "be in [0, 1)", self.gamma)
        _require(self.max_steps >= 1, "max_steps", "be at least 1", self.max_steps)
        parse_map(self.map_text)  # a bad map is refused here with the row that is wrong
        _require(self.imagination_episodes >= 1, "imagination_episodes", "be at least 1",
                 self.imagination_episodes)
        _require(self.gif_seconds_per_frame > 0, "gif_seconds_per_frame", "be positive",
                 self.gif_seconds_per_frame)

    @property
    def unseen_reward(self) -> float:
        """Reward the count model assumes for an untried pair."""
        if self.unseen_prior is UnseenPrior.OPTIMISTIC:
            return self.goal_reward
        return self.step_reward


def _require(ok: bool, key: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"gridworld.{key} must {rule}, got {value!r}.")


def _parse_prior(value: object) -> UnseenPrior:
    try:
        return UnseenPrior(value)
    except ValueError:
        choices = ", ".join(p.value for p in UnseenPrior)
        message = f"gridworld.unseen_prior must be one of {choices}, got {value!r}."
        raise ValueError(message) from None


@dataclass(frozen=True)
class RoundResult:
    """One row of rounds.csv: the learned model after ``round`` rounds of data."""

    round: int
    episodes: int  # real episodes collected so far
    env_steps: int  # real moves collected so far
    visited_pairs: int  # (square, action) pairs tried at least once
    collect_success: float  # share of this round's collection episodes that reached G
    success_rate: float  # exact, greedy policy of the learned model in the true env
    optimal_success_rate: float  # exact, optimal policy from the true P
    expected_return: float  # exact expected discounted return of the learned policy
    optimal_expected_return: float
    transition_tv: float  # mean total variation, learned vs true P, over visited pairs
    transition_tv_weighted: float  # the same, each pair weighted by how often it was tried


@dataclass(frozen=True)
class Plan:
    """Value iteration on one model: V (Z,), Q (Z, A), greedy policy (Z,) and model P (Z, A, Z)."""

    V: np.ndarray
    Q: np.ndarray
    policy: np.ndarray
    P: np.ndarray


RoundHook = Callable[[RoundResult, Plan], None]


def make_env(cfg: GridworldConfig) -> GridWorld:
    """The true environment described by ``cfg``."""
    return GridWorld(cfg.map_text, cfg.slip, cfg.step_reward, cfg.goal_reward, cfg.max_steps)


def plan_on(model: CountModel, env: GridWorld, gamma: float) -> Plan:
    """Value iteration on the learned model; the agent knows which square is the goal."""
    P = model.transition_matrix()
    V, Q = value_iteration(P, model.reward_table(), gamma, env.terminal_mask)
    return Plan(V=V, Q=Q, policy=greedy_policy(Q), P=P)


def optimal_plan(env: GridWorld, gamma: float) -> Plan:
    """Value iteration on the true transition probabilities."""
    P, R = env.transition_tensor()
    V, Q = value_iteration(P, R, gamma, env.terminal_mask)
    return Plan(V=V, Q=Q, policy=greedy_policy(Q), P=P)


def epsilon_greedy(Q: np.ndarray, epsilon: float, rng: np.random.Generator) -> Callable[[int], int]:
    """Behaviour policy: random action with prob ``epsilon``, else greedy with random ties."""

    def choose(z: int) -> int:
        if rng.random() < epsilon:
            return int(rng.integers(Q.shape[1]))
        return int(greedy_policy(Q[z : z + 1], rng=rng)[0])

    return choose


def collect_round(
    env: GridWorld, model: CountModel, plan: Plan, cfg: GridworldConfig, rng: np.random.Generator
) -> tuple[int, int]:
    """Collect one round of episodes into ``model``; returns (moves, episodes reaching G)."""
    choose = epsilon_greedy(plan.Q, cfg.epsilon, rng)
    moves, successes = 0, 0
    for _ in range(cfg.episodes_per_round):
        episode = rollout(env, choose, rng)
        steps = zip(episode.states[:-1], episode.actions, episode.states[1:], episode.rewards,
                    strict=True)
        for z, a, z2, r in steps:
            model.update(z, a, z2, r)
        moves += len(episode.actions)
        successes += int(episode.reached_goal)
    return moves, successes


def learn(
    cfg: GridworldConfig, on_round: RoundHook | None = None
) -> tuple[list[RoundResult], CountModel]:
    """Run all rounds (no files written); ``on_round`` sees each round's result and plan."""
    env = make_env(cfg)
    collect_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
    best = optimal_plan(env, cfg.gamma)
    best_score = evaluate_policy(env, best.policy, cfg.gamma)
    model = CountModel(env.n_states, env.n_actions, unseen_reward=cfg.unseen_reward)
    plan = plan_on(model, env, cfg.gamma)
    results, moves = [], 0
    for number in range(1, cfg.rounds + 1):
        round_moves, successes = collect_round(env, model, plan, cfg, collect_rng)
        moves += round_moves
        plan = plan_on(model, env, cfg.gamma)
        score = evaluate_policy(env, plan.policy, cfg.gamma)
        visits = model.visit_counts()
        tv = (mean_tv_over_visited(plan.P, best.P, visits),
              mean_tv_over_visited(plan.P, best.P, visits, weighted=True))
        result = _round_result(number, cfg, moves, model, successes, score, best_score, tv)
        results.append(result)
        if on_round is not None:
            on_round(result, plan)
    return results, model


def _round_result(
    number: int,
    cfg: GridworldConfig,
    moves: int,
    model: CountModel,
    successes: int,
    score: PolicyScore,
    best: PolicyScore,
    tv: tuple[float, float],
) -> RoundResult:
    return RoundResult(
        round=number,
        episodes=number * cfg.episodes_per_round,
        env_steps=moves,
        visited_pairs=int(model.seen_mask().sum()),
        collect_success=successes / cfg.episodes_per_round,
        success_rate=score.success_rate,
        optimal_success_rate=best.success_rate,
        expected_return=score.expected_return,
        optimal_expected_return=best.expected_return,
        transition_tv=tv[0],
        transition_tv_weighted=tv[1],
    )


def run_gridworld(
    cfg: GridworldConfig, out_dir: Path, log_metric: LogMetric | None = None
) -> dict[str, float]:
    """Learn the gridworld by counting and write its table and pictures into ``out_dir``.

    Writes ``rounds.csv``, ``round_XX.png`` per round, ``optimal.png``, ``rounds.gif`` and
    ``imagination.gif``; calls ``log_metric(name, value, round)`` for every figure of every
    round and prints one progress line per round to stderr.

    Returns:
        The flat summary: rounds, success_rate, optimal_success_rate, transition_tv,
        expected_return, optimal_expected_return (figures of the last round).
    """
    from evaluation.gridworld_plots import plot_round, rounds_gif  # matplotlib: only here

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = make_env(cfg)
    value_range = _value_range(cfg)
    pngs: list[Path] = []
    last: list[Plan] = []

    def on_round(result: RoundResult, plan: Plan) -> None:
        _report_round(result, cfg.rounds, log_metric)
        path = most_likely_path(plan.P, plan.policy, env.start, env.terminal_mask, env.max_steps)
        title = _round_title(result)
        png = out_dir / f"round_{result.round:02d}.png"
        pngs.append(plot_round(env, plan.V, plan.policy, path, title, png, value_range))
        last[:] = [plan]

    results, _ = learn(cfg, on_round)
    _write_csv(results, out_dir / "rounds.csv")
    _plot_optimal(env, cfg, out_dir / "optimal.png", value_range)
    rounds_gif(pngs, out_dir / "rounds.gif", seconds_per_frame=1.0)
    _write_imagination(env, cfg, last[0], out_dir / "imagination.gif")
    return _summary(results[-1], cfg.rounds)


def _value_range(cfg: GridworldConfig) -> tuple[float, float]:
    """Colour scale of the value maps: from "never reach G" up to the goal reward."""
    low = min(cfg.step_reward, 0.0) / (1.0 - cfg.gamma)
    high = max(cfg.goal_reward, low + 1e-3)
    return low, high


def _report_round(result: RoundResult, rounds: int, log_metric: LogMetric | None) -> None:
    print(
        f"gridworld round {result.round}/{rounds}: success {result.success_rate:.3f} "
        f"(optimal {result.optimal_success_rate:.3f}), return {result.expected_return:.3f} "
        f"(optimal {result.optimal_expected_return:.3f}), TV {result.transition_tv:.3f}, "
        f"visited pairs {result.visited_pairs}, real moves {result.env_steps}",
        file=sys.stderr,
    )
    if log_metric is None:
        return
    for name, value in asdict(result).items():
        if name != "round":
            log_metric(name, float(value), result.round)


def _round_title(result: RoundResult) -> str:
    return (
        f"round {result.round}: {result.episodes} episodes, {result.env_steps} real moves\n"
        f"success {result.success_rate:.2f} (optimal {result.optimal_success_rate:.2f}), "
        f"TV {result.transition_tv:.3f}"
    )


def _write_csv(results: list[RoundResult], out_csv: Path) -> None:
    names = [f.name for f in fields(RoundResult)]
    with out_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for result in results:
            writer.writerow({k: _csv_value(v) for k, v in asdict(result).items()})


def _csv_value(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6f}"


def _plot_optimal(
    env: GridWorld, cfg: GridworldConfig, out_png: Path, value_range: tuple[float, float]
) -> None:
    from evaluation.gridworld_plots import plot_round

    best = optimal_plan(env, cfg.gamma)
    path = most_likely_path(best.P, best.policy, env.start, env.terminal_mask, env.max_steps)
    title = "optimal: value iteration on the true transition probabilities"
    label = "V*(z) under the true model"
    plot_round(env, best.V, best.policy, path, title, out_png, value_range, label)


def _write_imagination(env: GridWorld, cfg: GridworldConfig, plan: Plan, out_gif: Path) -> None:
    """Roll the final greedy policy out in the learned model and in the real environment."""
    from evaluation.gridworld_plots import imagination_gif

    imagine_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))
    real_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2]))
    imagined, real = [], []
    for _ in range(cfg.imagination_episodes):
        imagined.append(sample_model_rollout(
            plan.P, plan.policy, env.start, env.terminal_mask, env.max_steps, imagine_rng
        ))
        real.append(rollout(env, lambda z: int(plan.policy[z]), real_rng).states)
    imagination_gif(env, plan.policy, imagined, real, out_gif, cfg.gif_seconds_per_frame)


def _summary(final: RoundResult, rounds: int) -> dict[str, float]:
    return {
        "rounds": float(rounds),
        "success_rate": final.success_rate,
        "optimal_success_rate": final.optimal_success_rate,
        "transition_tv": final.transition_tv,
        "expected_return": final.expected_return,
        "optimal_expected_return": final.optimal_expected_return,
    }
