"""Windows cover every token, spans point at the right characters, batches stay in budget."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alknet_firewall.windows import (
    WIDTH_STEP,
    Window,
    make_batch,
    padded_width,
    plan_batches,
    window_starts,
)


@given(st.integers(1, 5000), st.integers(8, 512), st.data())
def test_windows_cover_every_token(n_tokens: int, size: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, size))
    starts = window_starts(n_tokens, size, stride)
    covered = set()
    for start in starts:
        covered.update(range(start, min(start + size, n_tokens)))
    assert covered == set(range(n_tokens))
    assert all(start >= 0 and start + min(size, n_tokens) <= n_tokens for start in starts)


@given(st.lists(st.integers(1, 300), min_size=1, max_size=200), st.integers(64, 4096))
def test_batches_respect_the_token_budget(lengths: list[int], budget: int) -> None:
    windows = [Window(i, tuple(range(n)), 0, n) for i, n in enumerate(lengths)]
    batches = plan_batches(windows, budget)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        width = padded_width(max(lengths[i] for i in batch) + 1)
        assert len(batch) == 1 or width * len(batch) <= budget


class Tok:
    bos_token_id, pad_token_id, eos_token_id = 1, 0, 2


@given(
    st.lists(st.integers(1, 300), min_size=1, max_size=120),
    st.integers(64, 4096),
    st.integers(1, 8),
)
def test_a_window_is_padded_the_same_whatever_its_batch_mates(
    lengths: list[int], budget: int, extra: int
) -> None:
    """Kernels block by sequence length, so a window's padded width must be its own."""
    windows = [Window(i, tuple(range(3, n + 3)), 0, n) for i, n in enumerate(lengths)]
    suffix = list(range(100, 100 + extra))
    for batch in plan_batches(windows, budget, extra):
        arrays = make_batch(windows, batch, Tok(), suffix)  # type: ignore[arg-type]
        for index in batch:
            width = padded_width(lengths[index] + extra)
            assert arrays.input_ids.shape[1] == width
            assert width % WIDTH_STEP == 0 and width - WIDTH_STEP < lengths[index] + extra


def test_pool_mask_skips_bos_and_padding() -> None:
    windows = [Window(0, (5, 6, 7), 0, 10), Window(1, (8,), 10, 12)]
    batch = make_batch(windows, [0, 1], Tok())  # type: ignore[arg-type]
    pad = [0] * (WIDTH_STEP - 4)
    assert batch.input_ids.tolist() == [[1, 5, 6, 7, *pad], [1, 8, 0, 0, *pad]]
    no = [False] * (WIDTH_STEP - 4)
    assert batch.pool_mask.tolist() == [
        [False, True, True, True, *no],
        [False, True, False, False, *no],
    ]
    assert batch.real_tokens == 4
