"""Weights of the world-model loss terms (torch-free: the config tree holds them)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class LossWeights:
    """Weights of the world-model loss terms."""

    forecast: float = 1.0  # Gaussian NLL of future vehicle states
    presence: float = 0.5  # BCE of vehicle presence
    latent: float = 1.0  # KL (probabilistic) or latent consistency (deterministic)
    reward: float = 1.0
    collision: float = 2.0
    cont: float = 0.5
    free_bits: float = 1.0  # nats per step under which the KL is not penalised
    kl_balance: float = 0.8  # share of the latent loss that trains the prior
    collision_pos_weight: float = 10.0  # BCE weight of the rare positive class
    open_loop: float = 1.0  # weight of the open-loop rollout's head terms
    nll_beta: float = 0.5  # beta-NLL: NLL x detached std^(2 beta); 0 = plain Gaussian NLL
