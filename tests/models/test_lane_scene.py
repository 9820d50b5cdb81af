"""The lane summary of the observed scene (models/lane_scene.py)."""

from __future__ import annotations

import pytest
import torch

from models.lane_scene import EGO_LANES, LANE_OFFSETS, PER_VEHICLE, WIDTH, lane_scene


def vehicle(x: float, y: float, vx: float, lane: int) -> list[float]:
    return [x, y, vx, 0.0, 1.0, 0.0, float(lane)]  # ego frame, heading 0


def summary_of(frames: list[list[list[float]]], mask: list[list[float]]) -> torch.Tensor:
    return lane_scene(torch.tensor([frames]), torch.tensor([mask]))[0]


def side(summary: torch.Tensor, offset: int, ahead: bool) -> list[float]:
    """[found, gap/30, dy/4, dvx/10, vy/2, acc/5, 1/(1+gap/10)] of one lane side."""
    block = 2 * LANE_OFFSETS.index(offset) + (0 if ahead else 1)
    start = EGO_LANES + 3 + block * PER_VEHICLE
    return summary[start:start + PER_VEHICLE].tolist()


def test_each_lane_side_holds_its_nearest_present_vehicle():
    now = [vehicle(0, 0, 25, 1), vehicle(40, 0, 20, 1), vehicle(20, 0, 22, 1),
           vehicle(-10, 4, 30, 2), vehicle(5, -4, 25, 0)]
    before = [vehicle(-25, 0, 25, 1), vehicle(20, 0, 20, 1), vehicle(0, 0, 17, 1),
              vehicle(-40, 4, 30, 2), vehicle(-20, -4, 25, 0)]
    frames = [before] * 6 + [now] * 5  # the acceleration looks 5 frames back
    mask = [[1.0, 1.0, 1.0, 1.0, 1.0]] * 11
    mask[-1] = [1.0, 1.0, 1.0, 1.0, 0.0]  # the left-lane vehicle has gone
    summary = summary_of(frames, mask)
    assert summary.shape == (WIDTH,)
    assert summary[:EGO_LANES].tolist() == [0.0, 1.0, 0.0, 0.0]  # the ego is on lane 1
    assert summary[EGO_LANES].item() == pytest.approx(25 / 30)
    leader = side(summary, 0, ahead=True)  # 20 m ahead, not the one 40 m ahead
    assert leader == pytest.approx([1.0, 20 / 30, 0.0, -0.3, 0.0, 1.0, 1 / 3])
    follower = side(summary, 1, ahead=False)
    assert follower[:4] == pytest.approx([1.0, -10 / 30, 1.0, 0.5])
    assert side(summary, 1, ahead=True) == [0.0] * PER_VEHICLE
    assert side(summary, -1, ahead=True) == [0.0] * PER_VEHICLE  # absent at t0: ignored
    assert side(summary, 0, ahead=False) == [0.0] * PER_VEHICLE  # the ego is not its own


def test_the_summary_ignores_slot_order():
    cars = [vehicle(0, 0, 25, 1), vehicle(30, 0, 20, 1), vehicle(-12, 4, 28, 2),
            vehicle(8, -4, 24, 0)]
    mask = [[1.0] * 4] * 6
    swapped = [cars[0], cars[3], cars[1], cars[2]]
    assert torch.equal(summary_of([cars] * 6, mask), summary_of([swapped] * 6, mask))


def test_a_batch_is_summarised_scene_by_scene():
    generator = torch.Generator().manual_seed(3)
    hist = torch.randn(4, 6, 5, 7, generator=generator)
    hist[..., 0] *= 30.0
    hist[..., 6] = torch.randint(0, 3, (4, 6, 5), generator=generator).float()
    mask = (torch.rand(4, 6, 5, generator=generator) > 0.2).float()
    batched = lane_scene(hist, mask)
    one_by_one = torch.cat([lane_scene(hist[i:i + 1], mask[i:i + 1]) for i in range(4)])
    assert torch.equal(batched, one_by_one)
    assert batched[:, :EGO_LANES].sum(dim=1).tolist() == [1.0] * 4
    assert not torch.equal(batched[0], batched[1])
