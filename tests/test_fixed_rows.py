"""Fixed-row GEMM blocks: a row's result must not depend on the rows beside it."""

from __future__ import annotations

import torch

from alknet_firewall.fixed_rows import BLOCK_ROWS, FixedRowsLinear, use_fixed_rows


def blocked(in_features: int, out_features: int, dtype: torch.dtype) -> torch.nn.Linear:
    torch.manual_seed(0)
    layer = torch.nn.Linear(in_features, out_features).to(dtype)
    use_fixed_rows(layer)
    return layer


def test_a_row_gets_the_same_bits_alone_among_others_and_anywhere_in_the_batch() -> None:
    # bf16 as the model runs on CPUs with native bf16: on an AMX CPU, unblocked calls of
    # 48-256 rows gave some rows other bits than calls of one row.
    layer = blocked(576, 1536, torch.bfloat16)
    rows = torch.randn(3 * BLOCK_ROWS // 2, 576).to(torch.bfloat16)
    with torch.inference_mode():
        together = layer(rows)
        alone = torch.cat([layer(row[None]) for row in rows[:40]])
        order = torch.randperm(rows.shape[0])
        shuffled = layer(rows[order])[torch.argsort(order)]
        others = rows.clone()
        others[40:] = torch.randn(others.shape[0] - 40, 576).to(torch.bfloat16)
        beside_others = layer(others)[:40]
    assert torch.equal(together[:40], alone)
    assert torch.equal(together, shuffled)
    assert torch.equal(together[:40], beside_others)


def test_blocks_compute_the_same_linear_map_for_any_leading_shape() -> None:
    layer = blocked(24, 8, torch.float32)
    plain = torch.nn.Linear(24, 8)
    plain.load_state_dict(layer.state_dict())
    for shape in [(1, 24), (3, 5, 24), (2, BLOCK_ROWS + 3, 24)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            out = layer(x)
        assert out.shape == (*shape[:-1], 8)
        assert torch.allclose(out, plain(x), atol=1e-5)


def test_only_plain_linear_layers_are_converted_and_parameters_keep_their_names() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    names = [name for name, _ in model.named_parameters()]
    use_fixed_rows(model)
    assert isinstance(model[0], FixedRowsLinear) and isinstance(model[2], FixedRowsLinear)
    assert type(model[1]) is torch.nn.ReLU
    assert [name for name, _ in model.named_parameters()] == names


def test_blocks_give_the_bits_of_one_plain_call_per_block_with_and_without_bias() -> None:
    # Each block must meet exactly the GEMM a lone call of BLOCK_ROWS rows meets, whether
    # its result lands in the output directly or through the padded last block.
    for bias in (False, True):
        torch.manual_seed(1)
        layer = torch.nn.Linear(576, 192, bias=bias).to(torch.bfloat16)
        plain = torch.nn.Linear(576, 192, bias=bias).to(torch.bfloat16)
        plain.load_state_dict(layer.state_dict())
        use_fixed_rows(layer)
        rows = torch.randn(2 * BLOCK_ROWS + 7, 576).to(torch.bfloat16)
        padded = torch.cat([rows, rows.new_zeros(BLOCK_ROWS - 7, 576)])
        with torch.inference_mode():
            expected = torch.cat(
                [plain(padded[i : i + BLOCK_ROWS]) for i in range(0, padded.shape[0], BLOCK_ROWS)]
            )[: rows.shape[0]]
            assert torch.equal(layer(rows), expected)
