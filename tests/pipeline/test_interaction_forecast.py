"""Evaluation's forecasts pass the windows' vehicle sizes to a model that reads them."""

import numpy as np
import torch

from pipeline.forecast import history_codes, predict
from pipeline.windows import WindowSet
from tests.models.test_interaction import tiny
from tests.models.test_world_model import make_batch, tiny_model


def windows(sizes: np.ndarray) -> WindowSet:
    batch = make_batch(b=2, n=4, seed=1)
    batch["hist_mask"][:] = True
    arrays = {k: v.numpy() for k, v in batch.items()}
    return WindowSet(arrays | {"size": sizes.astype(np.float32)}, dt=1.0)


def test_predict_reads_sizes_for_the_interaction_variant_only():
    cars = np.tile(np.array([5.0, 2.0]), (2, 4, 1))
    trucks = cars.copy()
    trucks[:, 2] = (16.0, 2.5)
    model = tiny(4, seed=3)
    with_cars, with_trucks = predict(model, windows(cars)), predict(model, windows(trucks))
    assert np.abs(with_cars["states"] - with_trucks["states"]).max() > 1e-5
    rssm = tiny_model(n=4, seed=3)
    np.testing.assert_array_equal(predict(rssm, windows(cars))["states"],
                                  predict(rssm, windows(trucks))["states"])


def test_history_codes_are_the_models_encoding_of_each_history():
    cars = np.tile(np.array([5.0, 2.0]), (2, 4, 1))
    rssm = tiny_model(n=4, seed=3)
    codes = history_codes(rssm, windows(cars))
    assert codes.shape == (2, rssm.deter_dim)
    a = windows(cars).arrays
    expected = rssm.encode(torch.from_numpy(a["hist"]), torch.from_numpy(a["hist_mask"])).deter
    np.testing.assert_allclose(codes, expected.detach().numpy(), rtol=1e-6)
    assert history_codes(tiny(4, seed=3), windows(cars)) is None  # no single history vector
