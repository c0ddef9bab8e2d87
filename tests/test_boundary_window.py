"""The boundary band's window maximum and minimum (log-step doubling) equal the (2d+1) shifted copies they replace."""

import pytest
import torch

from segbench.metrics.boundary import _window


def shifted_copies(x: torch.Tensor, d: int, reduce) -> torch.Tensor:
    """The window by brute force: the reduction of all 2d+1 shifts per axis, rows then columns."""
    height, width = x.shape[-2] - 2 * d, x.shape[-1] - 2 * d
    rows = x[..., :, 0:width]
    for shift in range(1, 2 * d + 1):
        rows = reduce(rows, x[..., :, shift:shift + width])
    out = rows[..., 0:height, :]
    for shift in range(1, 2 * d + 1):
        out = reduce(out, rows[..., shift:shift + height, :])
    return out


@pytest.mark.parametrize("height,width,d", [(1, 1, 1), (5, 7, 1), (13, 9, 3), (8, 8, 10), (31, 17, 6),
                                            (64, 48, 46), (3, 100, 2), (40, 40, 7), (2, 9, 15)])
@pytest.mark.parametrize("reduce", [torch.maximum, torch.minimum])
def test_log_step_window_equals_shifted_copies(height, width, d, reduce):
    generator = torch.Generator().manual_seed(height * 1000 + width * 10 + d)
    x = torch.randint(0, 6, (2, height + 2 * d, width + 2 * d), generator=generator, dtype=torch.uint8)
    assert torch.equal(_window(x, d, reduce), shifted_copies(x, d, reduce))
