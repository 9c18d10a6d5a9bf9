"""3D ViT image encoder (SAM-Med3D ``ImageEncoderViT3D``) with the FastSAM3D student block layout as an option."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.model.common import LayerNorm3d, MLPBlock


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative positional embeddings (q_size, k_size, C) for query/key offsets along one axis."""
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist,
                                mode="linear").reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


class Attention(nn.Module):
    """Multi-head self-attention over a cubic token grid with SAM-Med3D's decomposed relative positions.

    ``window_size`` larger than the grid reproduces SAM-Med3D's windowed blocks, where the token grid is zero-padded
    (after ``norm1``) to one ``window_size``^3 window: padded keys equal the key bias, padded values the value bias,
    and they take part in the softmax. Only the real queries are computed, and all padded keys are folded into one
    virtual key (key bias, value bias) whose logit carries the log-sum-exp of the padded keys' position terms (they
    factorise per key axis), which is exact and costs a few percent of the padded attention.

    The relative-position terms are broadcast onto the key axes exactly as the reference does
    (``rel_d[:, :, :, :, None, None] + rel_h[:, :, :, None, :, None] + rel_w[:, :, :, None, None, :]`` on a
    ``(B, qd, qh, qw, kd, kh, kw)`` view); trained weights depend on it.
    """

    def __init__(self, dim: int, num_heads: int, input_size: int = 8, window_size: int = 0) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.window_size = window_size
        size = window_size if window_size > 0 else input_size
        self.rel_pos_d = nn.Parameter(torch.zeros(2 * size - 1, head_dim))
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * size - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, _ = x.shape
        if not d == h == w:
            raise ValueError(f"the 3D SAM encoder expects a cubic token grid, got {(d, h, w)}")
        if 0 < self.window_size < d:
            raise ValueError(f"attention windows smaller than the token grid ({self.window_size} < {d}) are not "
                             "supported")
        n = d * h * w
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, hd)
        q_bias, k_bias, v_bias = self.qkv.bias.view(3, 1, self.num_heads, 1, -1).unbind(0)  # (1, heads, 1, hd)
        scaled = q * self.scale
        attn, padded = self._rel_pos_terms(scaled @ k.transpose(-2, -1), q, q_bias, d)
        if padded is None:
            out = attn.softmax(dim=-1) @ v
        else:
            virtual = scaled @ k_bias.transpose(-2, -1) + padded.reshape(b, self.num_heads, n, 1)
            attn = torch.cat([attn, virtual], dim=-1).softmax(dim=-1)
            out = attn[..., :n] @ v + attn[..., n:] * v_bias
        out = out.view(b, self.num_heads, d, h, w, -1).permute(0, 2, 3, 4, 1, 5).reshape(b, d, h, w, -1)
        return self.proj(out)

    def _rel_pos_terms(self, attn: torch.Tensor, q: torch.Tensor, q_bias: torch.Tensor,
                       g: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add the position terms to the real keys' logits; with padding, also return the padded keys' log-sum-exp
        of position terms per query (B, heads, g, g, g)."""
        b, heads, n, hd = q.shape
        window = max(self.window_size, g)
        rd = get_rel_pos(window, window, self.rel_pos_d)[:g]  # indexed by the query's d < g
        rh = get_rel_pos(window, window, self.rel_pos_h)[:g]  # by the query's h < g
        rw = get_rel_pos(window, window, self.rel_pos_w)  # by a key axis: the full window
        qg = q.reshape(b, heads, g, g, g, hd)
        # the reference reads r_q at window positions past the grid too: padded tokens, whose query is the query bias
        pad = q_bias.view(1, heads, 1, 1, 1, hd).expand(b, heads, g, g, window - g, hd)
        q_ext = torch.cat([qg, pad], dim=4)
        # term_d[qd,qh,qw,kw] = q(qd,qh,qw).Rd[qd,kw]; term_h[qd,qh,kd,kw] = q(qd,qh,kd).Rh[qh,kw];
        # term_w[qd,qh,kh,kw] = q(qd,qh,kh).Rw[kh,kw]  (the reference's broadcast)
        term_d = torch.einsum("bndhwc,dkc->bndhwk", qg, rd)
        term_h = torch.einsum("bndhxc,hkc->bndhxk", q_ext, rh)
        term_w = torch.einsum("bndhyc,ykc->bndhyk", q_ext, rw)
        attn = (
            attn.view(b, heads, g, g, g, g, g, g)
            + term_d[..., None, None, :g]
            + term_h[:, :, :, :, None, :g, None, :g]
            + term_w[:, :, :, :, None, None, :g, :g]
        ).view(b, heads, n, n)
        if window == g:
            return attn, None

        # padded keys: every kw >= g, and for kw < g those with kd >= g or kh >= g (sums of positive terms only)
        h_real, h_pad = torch.logsumexp(term_h[..., :g, :], dim=4), torch.logsumexp(term_h[..., g:, :], dim=4)
        w_real, w_pad = torch.logsumexp(term_w[..., :g, :], dim=4), torch.logsumexp(term_w[..., g:, :], dim=4)
        w_all = torch.logaddexp(w_real, w_pad)
        per_kw = torch.where(
            torch.arange(window, device=q.device) < g,
            torch.logaddexp(h_pad + w_all, h_real + w_pad),
            torch.logaddexp(h_real, h_pad) + w_all,
        )  # (B, heads, qd, qh, kw)
        return attn, torch.logsumexp(term_d + per_kw[:, :, :, :, None, :], dim=-1)


class Block3D(nn.Module):
    """SAM-Med3D block: ``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, norm_layer: type[nn.Module], window_size: int,
                 input_size: int) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, input_size=input_size, window_size=window_size)
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class StudentBlock3D(Block3D):
    """FastSAM3D student block: ``x = norm2(x + attn(norm1(x))); x = x + mlp(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm2(x + self.attn(self.norm1(x)))
        return x + self.mlp(x)


class StudentMLPBlock3D(nn.Module):
    """FastSAM3D student block without attention: ``x = norm2(x); x = x + mlp(x)``."""

    def __init__(self, dim: int, mlp_ratio: float, norm_layer: type[nn.Module]) -> None:
        super().__init__()
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm2(x)
        return x + self.mlp(x)


class PatchEmbed3D(nn.Module):
    """Non-overlapping 3D patches to tokens, channels last."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 4, 1)


class ImageEncoderViT3D(nn.Module):
    """3D ViT: patch embedding, absolute + relative positions, transformer blocks, neck to ``out_chans``.

    ``student_skip_layers`` switches to the FastSAM3D student layout: that many MLP-only blocks first, then
    student attention blocks.
    """

    def __init__(self, img_size: int = 128, patch_size: int = 16, in_chans: int = 1, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, out_chans: int = 384,
                 window_size: int = 0, global_attn_indexes: tuple[int, ...] = (),
                 student_skip_layers: int | None = None, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)
        self.patch_embed = PatchEmbed3D(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, grid, embed_dim))
        blocks: list[nn.Module] = []
        for i in range(depth):
            window = 0 if i in global_attn_indexes else window_size
            if student_skip_layers is None:
                blocks.append(Block3D(embed_dim, num_heads, mlp_ratio, norm_layer, window, grid))
            elif i < student_skip_layers:
                blocks.append(StudentMLPBlock3D(embed_dim, mlp_ratio, norm_layer))
            else:
                blocks.append(StudentBlock3D(embed_dim, num_heads, mlp_ratio, norm_layer, window, grid))
        self.blocks = nn.ModuleList(blocks)
        self.neck = nn.Sequential(
            nn.Conv3d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm3d(out_chans),
            nn.Conv3d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm3d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 4, 1, 2, 3))
