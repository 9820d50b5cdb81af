"""The true slippery gridworld, its exact transition tensor, rollouts and policy evaluation.

Shape letters: Z states (free squares), A actions (4), H map rows, W map columns.

Map text: one line per row, ``#`` wall, ``S`` start, ``G`` goal, ``.`` floor; every row has
the same width and there is exactly one ``S`` and one ``G``. Squares outside the text count
as walls, so a border of ``#`` is optional. The states are the non-wall squares numbered in
reading order (row by row, left to right).

Dynamics: actions are 0 up, 1 right, 2 down, 3 left. With probability ``1 - slip`` the
intended move happens; with probability ``slip / 2`` each the agent slips to one of the two
perpendicular directions. A move into a wall (or off the map) leaves the agent where it is.

Rewards: every move pays ``step_reward``, except a move that lands on the goal, which pays
``goal_reward`` instead. The goal is terminal. An episode that has not reached the goal after
``max_steps`` moves is cut off and counts as a failure.

Policy evaluation here is *exact*, not Monte Carlo: the distribution over squares is pushed
through the true transition tensor for ``max_steps`` steps, so success rate and expected
return carry no sampling noise. ``rollout`` samples single episodes (seeded) for pictures and
for the data the agent learns from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ACTION_NAMES = ("up", "right", "down", "left")
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # (row, column) offset per action
MAP_SYMBOLS = "#SG."


@dataclass(frozen=True)
class Rollout:
    """One episode: ``states`` has one more entry than ``actions`` and ``rewards``."""

    states: list[int]
    actions: list[int]
    rewards: list[float]
    reached_goal: bool


class GridWorld:
    """The true environment.

    Args:
        map_text: the map (see the module docstring).
        slip: probability that a move goes sideways instead, in [0, 1].
        step_reward: reward of a move that does not reach the goal.
        goal_reward: reward of the move that reaches the goal.
        max_steps: moves per episode before it is cut off.
    """

    n_actions = 4

    def __init__(
        self,
        map_text: str,
        slip: float = 0.2,
        step_reward: float = -0.01,
        goal_reward: float = 1.0,
        max_steps: int = 50,
    ) -> None:
        if not 0.0 <= slip <= 1.0:
            raise ValueError(f"GridWorld slip must be in [0, 1], got {slip}.")
        if max_steps < 1:
            raise ValueError(f"GridWorld max_steps must be at least 1, got {max_steps}.")
        self.walls, start, goal = parse_map(map_text)  # walls: (H, W)
        self.slip = slip
        self.step_reward = step_reward
        self.goal_reward = goal_reward
        self.max_steps = max_steps
        self.cells = [(int(r), int(c)) for r, c in np.argwhere(~self.walls)]
        self._index = {cell: z for z, cell in enumerate(self.cells)}
        self.start = self._index[start]
        self.goal = self._index[goal]

    @property
    def shape(self) -> tuple[int, int]:
        """Map size (H, W)."""
        return self.walls.shape

    @property
    def n_states(self) -> int:
        return len(self.cells)

    @property
    def terminal_mask(self) -> np.ndarray:
        """True on the goal square, shape (Z,)."""
        mask = np.zeros(self.n_states, dtype=bool)
        mask[self.goal] = True
        return mask

    def state_of(self, cell: tuple[int, int]) -> int:
        """State index of a free square given as (row, column)."""
        if cell not in self._index:
            raise ValueError(f"GridWorld square {cell} is a wall or off the map.")
        return self._index[cell]

    def move(self, z: int, direction: int) -> int:
        """Square reached by a move in ``direction`` from ``z`` without slipping."""
        row, col = self.cells[z]
        d_row, d_col = MOVES[direction]
        target = (row + d_row, col + d_col)
        return self._index.get(target, z)  # walls and off-map squares are not in the index

    def outcomes(self, z: int, a: int) -> list[tuple[int, float]]:
        """(next state, probability) for the intended move and the two sideways slips."""
        sideways = ((a + 1) % 4, (a + 3) % 4)
        result = [(self.move(z, a), 1.0 - self.slip)]
        result += [(self.move(z, d), self.slip / 2) for d in sideways]
        return result

    def reward_of(self, z2: int) -> float:
        """Reward of a move that lands on ``z2``."""
        return self.goal_reward if z2 == self.goal else self.step_reward

    def transition_tensor(self) -> tuple[np.ndarray, np.ndarray]:
        """True P of shape (Z, A, Z) and expected reward R of shape (Z, A).

        The goal is absorbing with zero reward, so value iteration and policy evaluation can
        treat it like any other square.
        """
        P = np.zeros((self.n_states, self.n_actions, self.n_states))
        for z in range(self.n_states):
            for a in range(self.n_actions):
                for z2, prob in self.outcomes(z, a):
                    P[z, a, z2] += prob
        P[self.goal] = 0.0
        P[self.goal, :, self.goal] = 1.0
        rewards = np.array([self.reward_of(z2) for z2 in range(self.n_states)])  # (Z,)
        R = P @ rewards  # (Z, A)
        R[self.goal] = 0.0
        return P, R

    def step(self, z: int, a: int, rng: np.random.Generator) -> tuple[int, float, bool]:
        """Sample one move: returns (next state, reward, reached goal)."""
        if z == self.goal:
            raise ValueError("GridWorld.step was called on the goal square, which is terminal.")
        states, probs = zip(*self.outcomes(z, a), strict=True)
        z2 = states[rng.choice(3, p=probs)]
        return z2, self.reward_of(z2), z2 == self.goal


def parse_map(map_text: str) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Walls (H, W) bool, start (row, column) and goal (row, column) from map text."""
    rows = [line.rstrip() for line in map_text.strip("\n").splitlines()]
    rows = [row for row in rows if row]
    if not rows:
        raise ValueError("gridworld map is empty; give at least one row with S and G.")
    width = len(rows[0])
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ValueError(
                f"gridworld map row {number} has {len(row)} characters but row 1 has {width}; "
                f"every row must be the same width."
            )
        unknown = sorted(set(row) - set(MAP_SYMBOLS))
        if unknown:
            raise ValueError(
                f"gridworld map row {number} has unknown symbol(s) {unknown}; "
                f"use only '#' wall, 'S' start, 'G' goal, '.' floor."
            )
    grid = np.array([list(row) for row in rows])  # (H, W)
    return grid == "#", _find_one(grid, "S", "start"), _find_one(grid, "G", "goal")


def _find_one(grid: np.ndarray, symbol: str, name: str) -> tuple[int, int]:
    found = np.argwhere(grid == symbol)
    if len(found) != 1:
        raise ValueError(
            f"gridworld map must have exactly one '{symbol}' ({name}), found {len(found)}."
        )
    return int(found[0][0]), int(found[0][1])


def rollout(
    env: GridWorld, choose_action: Callable[[int], int], rng: np.random.Generator
) -> Rollout:
    """Run one episode from the start square.

    Args:
        env: the true environment.
        choose_action: maps the current state to an action, e.g. ``lambda z: policy[z]``;
            any exploration randomness lives inside it.
        rng: source of the slips.
    """
    states, actions, rewards = [env.start], [], []
    for _ in range(env.max_steps):
        a = int(choose_action(states[-1]))
        z2, r, done = env.step(states[-1], a, rng)
        states.append(z2)
        actions.append(a)
        rewards.append(r)
        if done:
            return Rollout(states, actions, rewards, reached_goal=True)
    return Rollout(states, actions, rewards, reached_goal=False)


def sample_model_rollout(
    P: np.ndarray,
    policy: np.ndarray,
    start: int,
    terminal_mask: np.ndarray,
    max_steps: int,
    rng: np.random.Generator,
) -> list[int]:
    """States visited by ``policy`` when next squares are drawn from ``P`` alone (imagination).

    Args:
        P: transition probabilities, shape (Z, A, Z), e.g. a learned model's estimate.
        policy: action per state, shape (Z,).
        start: start state; terminal_mask: bool (Z,) where the rollout stops.
    """
    states = [start]
    for _ in range(max_steps):
        z = states[-1]
        if terminal_mask[z]:
            break
        states.append(int(rng.choice(P.shape[2], p=P[z, policy[z]])))
    return states


@dataclass(frozen=True)
class PolicyScore:
    """Exact figures of a policy in the true environment."""

    success_rate: float  # probability of reaching the goal within max_steps
    expected_return: float  # expected discounted return from the start within max_steps


def evaluate_policy(env: GridWorld, policy: np.ndarray, gamma: float) -> PolicyScore:
    """Exact success rate and discounted return of a deterministic policy (no sampling).

    The distribution over squares d_t of shape (Z,) starts on S and is pushed through the
    true P under ``policy`` for ``env.max_steps`` steps; the goal is absorbing with zero
    reward, so the goal's mass at the end is the success rate.
    """
    if policy.shape != (env.n_states,):
        raise ValueError(
            f"evaluate_policy expects a policy of shape ({env.n_states},), got {policy.shape}."
        )
    P, R = env.transition_tensor()
    states = np.arange(env.n_states)
    P_pi, R_pi = P[states, policy], R[states, policy]  # (Z, Z), (Z,)
    dist = np.zeros(env.n_states)
    dist[env.start] = 1.0
    total = 0.0
    for t in range(env.max_steps):
        total += gamma**t * float(dist @ R_pi)
        dist = dist @ P_pi
    return PolicyScore(success_rate=float(dist[env.goal]), expected_return=total)


def total_variation(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Total-variation distance 0.5 * sum_z' |P - Q| per pair: (Z, A, Z) x2 -> (Z, A)."""
    if P.shape != Q.shape:
        raise ValueError(f"total_variation needs equal shapes, got {P.shape} and {Q.shape}.")
    return 0.5 * np.abs(P - Q).sum(axis=-1)


def mean_tv_over_visited(
    P_learned: np.ndarray, P_true: np.ndarray, visits: np.ndarray, weighted: bool = False
) -> float:
    """Mean total variation over the pairs with ``visits`` > 0; nan if there are none.

    Args:
        P_learned, P_true: transition probabilities, shape (Z, A, Z).
        visits: how often each pair was tried, shape (Z, A).
        weighted: weight each pair by its visits (how wrong the model is where the agent
            actually goes) instead of counting every visited pair once.
    """
    visited = visits > 0
    if not visited.any():
        return float("nan")
    tv = total_variation(P_learned, P_true)[visited]
    weights = visits[visited] if weighted else None
    return float(np.average(tv, weights=weights))
