"""Tabular world model for the slippery gridworld: learned by counting.

Shape letters used here: Z states (the free squares of the map), A actions.

The model keeps one counter per (square, action, next square). Its transition estimate is

    p_hat(z' | z, a) = N(z, a, z') / sum_z~ N(z, a, z~)

and its reward estimate is the mean reward observed after taking ``a`` in ``z``.

Unseen pairs. A pair (z, a) that was never tried has no counts, so the formula above is
0 / 0. The model answers with an explicit *self-loop prior*: an untried move is assumed to
leave the agent where it is and to pay ``unseen_reward`` on every step. Two settings are
useful and are the only ones the pipeline offers:

* ``unseen_reward`` equal to the environment's step reward: every untried move is treated
  like bumping into a wall. The planner never prefers the unknown; exploration comes only
  from the behaviour policy's randomness.
* ``unseen_reward`` equal to the goal reward (R-max style optimism): staying forever on an
  untried move is worth ``unseen_reward / (1 - gamma)``, more than anything real, so the
  planner heads for untried moves until none are left within reach.

The module is pure numpy: no torch, no file I/O.
"""

from __future__ import annotations

import numpy as np


class CountModel:
    """Transition counts and reward sums for Z states and A actions.

    Args:
        n_states: number of states Z.
        n_actions: number of actions A.
        unseen_reward: reward assumed for a (state, action) pair that was never tried; such a
            pair is also assumed to self-loop (see the module docstring).
    """

    def __init__(self, n_states: int, n_actions: int, unseen_reward: float = 0.0) -> None:
        if n_states < 1 or n_actions < 1:
            raise ValueError(
                f"CountModel needs at least one state and one action, got "
                f"n_states={n_states}, n_actions={n_actions}."
            )
        self.n_states = n_states
        self.n_actions = n_actions
        self.unseen_reward = float(unseen_reward)
        self.counts = np.zeros((n_states, n_actions, n_states), dtype=np.int64)  # (Z, A, Z)
        self.reward_sum = np.zeros((n_states, n_actions), dtype=np.float64)  # (Z, A)

    def update(self, z: int, a: int, z2: int, r: float) -> None:
        """Count one observed transition ``z --a--> z2`` that paid reward ``r``."""
        self._check_index(z, self.n_states, "state z")
        self._check_index(a, self.n_actions, "action a")
        self._check_index(z2, self.n_states, "next state z2")
        self.counts[z, a, z2] += 1
        self.reward_sum[z, a] += r

    def visit_counts(self) -> np.ndarray:
        """Number of times each pair was tried, shape (Z, A)."""
        return self.counts.sum(axis=2)

    def seen_mask(self) -> np.ndarray:
        """True where the pair was tried at least once, shape (Z, A)."""
        return self.visit_counts() > 0

    def transition_matrix(self) -> np.ndarray:
        """Estimated p_hat(z' | z, a), shape (Z, A, Z); every row sums to one.

        Unseen pairs get the self-loop prior: all probability on z' = z.
        """
        visits = self.visit_counts()  # (Z, A)
        safe = np.maximum(visits, 1)[:, :, None]  # (Z, A, 1)
        probs = self.counts / safe
        unseen_z, unseen_a = np.nonzero(visits == 0)
        probs[unseen_z, unseen_a, unseen_z] = 1.0
        return probs

    def reward_table(self) -> np.ndarray:
        """Mean observed reward per pair, shape (Z, A); unseen pairs get ``unseen_reward``."""
        visits = self.visit_counts()
        means = self.reward_sum / np.maximum(visits, 1)
        return np.where(visits > 0, means, self.unseen_reward)

    @staticmethod
    def _check_index(value: int, size: int, name: str) -> None:
        if not 0 <= value < size:
            raise ValueError(f"CountModel.update got {name}={value}, expected 0..{size - 1}.")


def value_iteration(
    P: np.ndarray,
    R: np.ndarray,
    gamma: float,
    terminal_mask: np.ndarray | None = None,
    tol: float = 1e-8,
    max_iters: int = 100_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve the discounted Bellman optimality equation by repeated backups.

    Q(z, a) = R(z, a) + gamma * sum_z' P(z' | z, a) V(z'),  V(z) = max_a Q(z, a),
    with V = Q = 0 on terminal states (the episode ends there, nothing more is earned).

    Args:
        P: transition probabilities, shape (Z, A, Z).
        R: expected reward per pair, shape (Z, A).
        gamma: discount in [0, 1).
        terminal_mask: bool, shape (Z,); None means no terminal states.
        tol: stop when no state value changes by more than this.
        max_iters: safety cap on the number of backups.

    Returns:
        V of shape (Z,) and Q of shape (Z, A).
    """
    n_states, n_actions = _check_mdp(P, R, gamma)
    terminal = _terminal_or_none(terminal_mask, n_states)
    V = np.zeros(n_states)
    for _ in range(max_iters):
        Q = R + gamma * P @ V  # (Z, A)
        Q[terminal] = 0.0
        V_new = Q.max(axis=1)
        if np.max(np.abs(V_new - V)) < tol:
            return V_new, Q
        V = V_new
    raise RuntimeError(
        f"value_iteration did not converge to tol={tol} in {max_iters} backups; "
        f"lower gamma or raise max_iters."
    )


def greedy_policy(
    Q: np.ndarray, rng: np.random.Generator | None = None, atol: float = 1e-6
) -> np.ndarray:
    """Best action per state, shape (Z,) of ints, from Q of shape (Z, A).

    Actions within ``atol`` of the best count as tied (value iteration leaves rounding noise
    of about its ``tol``). Without ``rng`` ties go to the lowest action index (deterministic,
    used for evaluation and pictures); with ``rng`` they are broken uniformly at random, so an
    agent with a flat value estimate wanders instead of repeating one move.
    """
    if Q.ndim != 2:
        raise ValueError(f"greedy_policy expects Q of shape (Z, A), got shape {Q.shape}.")
    is_best = (Q.max(axis=1, keepdims=True) - Q) <= atol  # (Z, A)
    if rng is None:
        return is_best.argmax(axis=1)  # first True: the lowest tied action
    noise = rng.random(Q.shape)
    return np.where(is_best, noise, -1.0).argmax(axis=1)


def _check_mdp(P: np.ndarray, R: np.ndarray, gamma: float) -> tuple[int, int]:
    if P.ndim != 3 or P.shape[0] != P.shape[2]:
        raise ValueError(f"value_iteration expects P of shape (Z, A, Z), got shape {P.shape}.")
    if R.shape != P.shape[:2]:
        raise ValueError(
            f"value_iteration expects R of shape {P.shape[:2]} to match P, got {R.shape}."
        )
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"value_iteration needs gamma in [0, 1), got {gamma}.")
    return P.shape[0], P.shape[1]


def _terminal_or_none(terminal_mask: np.ndarray | None, n_states: int) -> np.ndarray:
    if terminal_mask is None:
        return np.zeros(n_states, dtype=bool)
    terminal = np.asarray(terminal_mask, dtype=bool)
    if terminal.shape != (n_states,):
        raise ValueError(
            f"value_iteration expects terminal_mask of shape ({n_states},), "
            f"got {terminal.shape}."
        )
    return terminal


def most_likely_path(
    P: np.ndarray,
    policy: np.ndarray,
    start: int,
    terminal_mask: np.ndarray,
    max_len: int,
) -> list[int]:
    """The plan as the model sees it: from ``start`` follow ``policy`` and always take the
    most likely next state under ``P`` (Z, A, Z); stop at a terminal state, at the first
    revisit (the plan is going in circles, e.g. into an unseen pair's self-loop) or after
    ``max_len`` moves.
    """
    path = [start]
    while len(path) <= max_len and not terminal_mask[path[-1]]:
        z = path[-1]
        z2 = int(P[z, policy[z]].argmax())
        if z2 in path:
            break
        path.append(z2)
    return path
