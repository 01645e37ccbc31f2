"""Fused matmuls on quantized weights (CPU, bf16).

Dequantizing a block costs ~0.3-0.5 ns a weight on a CPU, ten times what the matmul itself costs at
batch 1 (a bf16 GEMV reads 2 bytes a weight). For the rows of a decode step, PyTorch's weight-only
kernels read the codes directly: _weight_int8pack_mm (int8 codes, a scale per output channel) and
_weight_int4pack_mm_for_cpu (int4 codes in its own layout, a scale and an offset per group). A prefill
still dequantizes and runs a dense matmul, which is faster for its many rows. Measured on a 2-core
Xeon (AMX), a [8192 x 2048] weight: int8 0.52 ms at 1 row, 3.2 ms at 16, 13 ms at 64; int4 0.43 / 3.1 /
13 ms; dequantizing it costs 4.8 ms (int8) and 8.2 ms (int4), the dense bf16 matmul 1.3-1.6 ms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALIGNMENT = 64  # of the codes the kernels load (they fault on codes 8 bytes off a 16-byte boundary)
CPU_INT4_BLOCK = 64  # rows per block of _weight_int4pack_mm_for_cpu's layout
CPU_INT4_GROUPS = (32, 64, 128, 256)  # group sizes its kernel takes


def fused_supported(quant, shapes, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the fused kernels run these quantized weights: on a CPU computing in bf16 (the kernels'
    fast path; in fp32 they are slower than dequantizing), and for int4 the kernel's row blocking and
    group sizes. shapes: role -> [out, in] of each quantized weight."""
    if quant is None or device.type != "cpu" or dtype != torch.bfloat16 or not shapes:
        return False
    if quant.bits == 8:
        return True
    return quant.group_size in CPU_INT4_GROUPS and all(n % CPU_INT4_BLOCK == 0 for n, _ in shapes.values())


def work_bytes(n_in: int) -> int:
    """Bytes of work space pack_int4_for_cpu_ and dequantize_cpu_int4_into need at least: one block of
    rows, in fp32."""
    return CPU_INT4_BLOCK * n_in * 4


def pack_int4_for_cpu_(q: torch.Tensor, group_size: int, work: torch.Tensor) -> torch.Tensor:
    """Rewrite int4 codes in place from the checkpoint's layout (per group, byte j holds codes j and
    j + group/2) into _weight_int4pack_mm_for_cpu's (per block of 64 rows, byte k * 32 + n holds column
    k of rows n and n + 32). Each block of 64 rows depends on itself only, so it goes a slice of rows at a
    time through `work` (any tensor, used as bytes)."""
    n_out, h = q.shape
    n_in, half = 2 * h, group_size // 2
    w8 = work.view(-1).view(torch.uint8)
    rows = max(CPU_INT4_BLOCK, (w8.numel() // (n_in + h)) // CPU_INT4_BLOCK * CPU_INT4_BLOCK)
    for a in range(0, n_out, rows):
        b = min(n_out, a + rows)
        nb = (b - a) // CPU_INT4_BLOCK
        codes = w8[:(b - a) * n_in].view(nb, 2, 32, n_in)
        g = codes.view(b - a, n_in // group_size, group_size)
        src = q[a:b].view(b - a, n_in // group_size, half)
        torch.bitwise_and(src, 15, out=g[..., :half])
        torch.bitwise_right_shift(src, 4, out=g[..., half:])
        codes[:, 1].bitwise_left_shift_(4).bitwise_or_(codes[:, 0])  # rows n + 32 high, rows n low
        packed = w8[(b - a) * n_in:(b - a) * (n_in + h)].view(nb, n_in, 32)
        packed.copy_(codes[:, 1].transpose(1, 2))
        q[a:b].view(-1).copy_(packed.view(-1))
    return q


def dequantize_cpu_int4_into(out: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                             group_size: int, work: torch.Tensor | None = None) -> torch.Tensor:
    """dequantize_into for int4 codes already in the CPU kernel's layout (pack_int4_for_cpu_): the same
    values, for the dense matmul of a large prefill."""
    n_out, n_in = out.shape
    fp32 = out.dtype == torch.float32
    size = work.numel() if work is not None and not fp32 else work_bytes(n_in) // 4
    rows = max(CPU_INT4_BLOCK, size // n_in // CPU_INT4_BLOCK * CPU_INT4_BLOCK)
    for a in range(0, n_out, rows):
        b = min(n_out, a + rows)
        f = out[a:b] if fp32 else work[:(b - a) * n_in].view(b - a, n_in)
        blocks = f.view((b - a) // CPU_INT4_BLOCK, 2, 32, n_in)
        p = q[a:b].view((b - a) // CPU_INT4_BLOCK, n_in, 32)
        torch.bitwise_and(p, 15, out=blocks[:, 0].transpose(1, 2))
        torch.bitwise_right_shift(p, 4, out=blocks[:, 1].transpose(1, 2))
        g = f.view(b - a, n_in // group_size, group_size)
        g.sub_(zero[a:b, :, None].float()).mul_(scale[a:b, :, None].float())
        if not fp32:
            out[a:b].copy_(f)
    return out


class FusedLinear:
    """A quantized weight that multiplies without being dequantized: y = x @ w.T (+ bias)."""

    __slots__ = ("q", "scale", "group_size", "n_out")

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, group_size: int | None,
                 dtype: torch.dtype):
        self.q, self.group_size, self.n_out = q, group_size, q.shape[0]
        if group_size is None:
            self.scale = scale.to(dtype)
        else:
            # w = (q - zero) * scale = (q - 8) * scale + (8 - zero) * scale: the kernel's scale and offset, [groups, out, 2]
            sz = torch.empty(*scale.shape[::-1], 2, dtype=torch.float32, device=scale.device)
            sz[..., 0].copy_(scale.t())
            torch.mul(zero.t(), -1.0, out=sz[..., 1]).add_(8).mul_(sz[..., 0])
            self.scale = sz.to(dtype)

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        if self.group_size is None:
            y = torch._weight_int8pack_mm(x2, self.q, self.scale)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.q, self.group_size, self.scale)
        if bias is not None:
            y = y.add_(bias)
        return y.view(*x.shape[:-1], self.n_out)


def linear(x: torch.Tensor, w, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear for a block's weight, dense or fused (FusedLinear)."""
    if isinstance(w, FusedLinear):
        return w(x, bias)
    return F.linear(x, w, bias)
