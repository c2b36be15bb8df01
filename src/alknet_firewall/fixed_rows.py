"""Linear layers that multiply fixed blocks of rows, so a row's result never depends on
how many other rows share its batch.

oneDNN picks its CPU GEMM kernel (AMX tiles or AVX-512, how it blocks the inner
dimension) by the shape of the call, and kernels round differently. On a CPU with AMX, a
bf16 linear layer gave some rows other bits when the call held 48 to 256 rows than when
it held 32 or 1,000 (and 16-token padding of each window, windows.py, cannot help: the
row count is windows x width). Through 20 layers that moved a text's score by up to 0.02
with its batch-mates. With every call cut into blocks of exactly `BLOCK_ROWS` rows (the
last zero-padded), each row meets one kernel, at any position, beside any other rows:
same text, same activations, in a batch, alone or through the queue. CUDA is left as it
is (its own batch invariance is unmeasured).
"""

from __future__ import annotations

import torch
from torch.nn import functional

# Rows per GEMM call. What it costs, measured in bf16 with alternate runs: on a 2-core AMD
# EPYC with AVX512-bf16 and no AMX (264 texts, bench/fixed_rows_cost.py) 0.96-1.00 of the
# speed of unblocked calls as medians of three rounds, with 1,024 rows 0.97; before the
# blocks wrote into the output in place, 0.87-0.89 there and 0.70-0.74 on a 2-core AMX CPU
# (180 texts; not measured since). A lone short text pays for one block of zeros, about
# 36 MFLOP a layer (milliseconds), which 256 keeps four times smaller than 1,024 would.
BLOCK_ROWS = 256


class FixedRowsLinear(torch.nn.Linear):
    """A `torch.nn.Linear` whose input rows go through the GEMM in blocks of `block_rows`.

    For inference (the detector runs under `torch.inference_mode`): GEMMs into a given
    output (`out=`) record no gradient, so autograd refuses them."""

    block_rows = BLOCK_ROWS

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        flat = input.reshape(-1, input.shape[-1])
        rows = flat.shape[0]
        if rows == 0:  # nothing to block
            return functional.linear(input, self.weight, self.bias)
        size = self.block_rows
        # Each block's GEMM writes straight into its rows of the output: gathering the
        # blocks with torch.cat afterwards copied every activation once more, which took a
        # quarter of a forward pass's CPU time in a profile. Same kernel, same bits.
        out = flat.new_empty(rows, self.out_features)
        whole = rows - rows % size
        for start in range(0, whole, size):
            self._multiply(flat[start : start + size], out[start : start + size])
        if whole < rows:  # only the last block is padded, not the input
            last = flat.new_zeros(size, flat.shape[1])
            last[: rows - whole] = flat[whole:]
            product = flat.new_empty(size, self.out_features)
            self._multiply(last, product)
            out[whole:] = product[: rows - whole]
        return out.reshape(*input.shape[:-1], -1)

    def _multiply(self, block: torch.Tensor, target: torch.Tensor) -> None:
        """One block's linear map, written into `target` (one GEMM of `block_rows` rows)."""
        if self.bias is None:
            torch.mm(block, self.weight.t(), out=target)
        else:
            torch.addmm(self.bias, block, self.weight.t(), out=target)


def use_fixed_rows(model: torch.nn.Module) -> None:
    """Turn every linear layer of `model` into a FixedRowsLinear, in place: same weights,
    same parameter names, only the forward pass changes."""
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = FixedRowsLinear
