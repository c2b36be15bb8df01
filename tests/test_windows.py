"""Windows cover every token, spans point at the right characters, batches stay in budget."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alknet_firewall.windows import Window, make_batch, plan_batches, window_starts


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
        width = max(lengths[i] for i in batch) + 1
        assert len(batch) == 1 or width * len(batch) <= budget


def test_pool_mask_skips_bos_and_padding() -> None:
    class Tok:
        bos_token_id, pad_token_id, eos_token_id = 1, 0, 2

    windows = [Window(0, (5, 6, 7), 0, 10), Window(1, (8,), 10, 12)]
    batch = make_batch(windows, [0, 1], Tok())  # type: ignore[arg-type]
    assert batch.input_ids.tolist() == [[1, 5, 6, 7], [1, 8, 0, 0]]
    assert batch.pool_mask.tolist() == [[False, True, True, True], [False, True, False, False]]
    assert batch.real_tokens == 4
