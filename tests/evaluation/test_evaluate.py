"""protoreg.evaluation.evaluate: streamed evaluation equals the whole-tensor one."""

from __future__ import annotations

import torch

from protoreg.evaluation.evaluate import eval_chunk, fit_mse, stream_responses
from protoreg.model.mlp import GaussianMLP


def model_and_data(runs: int = 2, n: int = 37, width: int = 11, dim: int = 3) -> tuple[GaussianMLP, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    model = GaussianMLP(runs, width, dim, 2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.rand(runs, n, dim, generator=g, dtype=torch.float64)
    y = torch.rand(runs, n, 2, generator=g, dtype=torch.float64)
    return model, x, y


def test_chunks_give_the_whole_tensor_counts_and_error() -> None:
    model, x, y = model_and_data()
    hidden, pred = model(x)
    ref_wins = torch.stack([torch.bincount(hidden[r].argmax(-1), minlength=model.width) for r in range(x.shape[0])])
    whole_mse, whole_wins = stream_responses(model, x, y)
    assert torch.equal(whole_mse, fit_mse(pred, y)) and torch.equal(whole_wins, ref_wins)
    for chunk in (1, 5, 36):
        mse, wins = stream_responses(model, x, y, chunk=chunk)
        assert torch.equal(wins, ref_wins), chunk
        torch.testing.assert_close(mse.double(), fit_mse(pred, y).double(), rtol=1e-12, atol=0)


def test_the_chunk_bounds_the_elements_of_one_evaluation() -> None:
    assert eval_chunk(1, 100, 10) == 100  # small: one chunk
    c = eval_chunk(4, 10**6, 10**4)
    assert 1 <= c < 10**6 and 4 * c * 10**4 <= 1 << 24
    assert eval_chunk(1, 10, 10**9) == 1  # never zero
