"""Attention, softmax(q k^T * scale [+ causal mask]) v, as one flash-attention kernel.

Each program owns BLOCK_M query rows of one (batch, head) and walks the keys in BLOCK_N blocks with an
online softmax (running max and sum, the output rescaled as the max grows), so the (seq x seq)
scores never reach memory. Causal programs stop at their diagonal. fp32 inputs multiply in full fp32
(input_precision="ieee": TF32 would fail an fp32 problem's check, or three TF32 products under the
TF32X3 switch); bf16/fp16 on tensor cores, the
probabilities cast to the input dtype for the second product as the reference's own matmul does.
q, k and v are read through their strides as (batch, heads, seq, dim): the heads a model splits off
with a view and a transpose (minGPT's, nn.MultiheadAttention's) are not copied first."""

from __future__ import annotations

import torch

from .codegen import TF32X3_NOTE, RegionCode, fmt_float
from .ir import Val
from .partition import Region


def emit(region: Region, idx: int, tf32x3: bool = False) -> RegionCode:
    v = region.root
    if len(region.nodes) != 1 or v.kind != "attn":
        raise NotImplementedError("an attention region holds one attention")
    q, k, val = v.args[:3]
    scale = v.args[3] if len(v.args) > 3 else None  # None: 1/sqrt(head size), scaled_dot_product_attention's
    P = f"ATTN{idx}"
    fp32 = q.dtype == torch.float32  # only fp32 products have a choice of precision
    switch = f"{P}_TF32X3 = {int(tf32x3)}  {TF32X3_NOTE}\n" if fp32 else ""
    precision = f'("tf32x3" if {P}_TF32X3 else "ieee")' if fp32 else '"ieee"'

    kname, wname = f"_attn{idx}_kernel", f"_attn{idx}"
    kernel = f"""{P}_BLOCK_M = 64  # query rows per program
{P}_BLOCK_N = 64  # keys per step
{P}_NUM_WARPS = 4
{P}_NUM_STAGES = 2
{switch}

@triton.jit
def {kname}(q_ptr, k_ptr, v_ptr, out_ptr, scale, SEQ_Q, SEQ_K, D, DV, HEADS,
            sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, SCALE_IN_MEMORY: tl.constexpr,
            CAUSAL: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
            BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // HEADS, bh % HEADS
    q_ptr += b * sqb + h * sqh
    k_ptr += b * skb + h * skh
    v_ptr += b * svb + h * svh
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    rdv = tl.arange(0, BLOCK_DV)
    q = tl.load(q_ptr + rm[:, None] * sqm + rd[None, :] * sqd,
                mask=(rm[:, None] < SEQ_Q) & (rd[None, :] < D), other=0.0)
    if SCALE_IN_MEMORY:  # a model attribute, as a 0-dim tensor: read on the device, no host sync
        scale = tl.load(scale)
    qk_scale = scale * 1.4426950408889634  # exp2 instead of exp: log2(e) folded in
    m_i = tl.full([BLOCK_M], float('-inf'), tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    hi = SEQ_K
    if CAUSAL:
        hi = tl.minimum(SEQ_K, (pid_m + 1) * BLOCK_M)
    for start in range(0, hi, BLOCK_N):
        rn = start + tl.arange(0, BLOCK_N)
        kt = tl.load(k_ptr + rn[None, :] * skn + rd[:, None] * skd,
                     mask=(rn[None, :] < SEQ_K) & (rd[:, None] < D), other=0.0)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        valid = rn[None, :] < SEQ_K
        if CAUSAL:
            valid = valid & (rn[None, :] <= rm[:, None])
        s = tl.where(valid, s, float('-inf'))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        vb = tl.load(v_ptr + rn[:, None] * svn + rdv[None, :] * svd,
                     mask=(rn[:, None] < SEQ_K) & (rdv[None, :] < DV), other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(vb.dtype), vb, input_precision=PRECISION)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(out_ptr + bh * SEQ_Q * DV + rm[:, None] * DV + rdv[None, :], out,
             mask=(rm[:, None] < SEQ_Q) & (rdv[None, :] < DV))"""
    # a python number the forward computes (1 / math.sqrt(k.size(-1))) is an argument, as a 0-dim tensor
    # is (read on the device, no host sync); None is computed from q's shape here
    number = isinstance(scale, Val) and bool(scale.mm.get("tuple"))
    in_memory = isinstance(scale, Val) and not number
    args = [q, k, val] + ([scale] if isinstance(scale, Val) else [])
    value = "scale" if isinstance(scale, Val) else "1.0 / math.sqrt(d)" if scale is None else fmt_float(float(scale))
    wrapper = f"""def {wname}(q, k, v{', scale' if isinstance(scale, Val) else ''}):
    out = torch.empty(tuple(q.shape[:-1]) + (v.shape[-1],), device=q.device, dtype=q.dtype)
    q, k, v = (t.unsqueeze(1) if t.dim() == 3 else t.reshape(-1, *t.shape[-3:]) for t in (q, k, v))
    seq_q, d, seq_k, dv = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    grid = (_cdiv(seq_q, {P}_BLOCK_M), q.shape[0] * q.shape[1])
    {kname}[grid](q, k, v, out, {value}, seq_q, seq_k, d, dv, q.shape[1], *q.stride(), *k.stride(), *v.stride(),
                  SCALE_IN_MEMORY={in_memory}, CAUSAL={v.mm['causal']},
                  PRECISION={precision} if q.dtype == torch.float32 else "tf32",
                  BLOCK_M={P}_BLOCK_M,
                  BLOCK_N={P}_BLOCK_N, BLOCK_D=max(16, _pow2(d)),
                  BLOCK_DV=max(16, _pow2(dv)), num_warps={P}_NUM_WARPS,
                  num_stages={P}_NUM_STAGES)
    return out"""
    return RegionCode(source=kernel + "\n\n\n" + wrapper, wrapper=wname, args=args)
