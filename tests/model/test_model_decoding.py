"""Beam and greedy search: the key/value cache and the memo of aligned words never change the output."""

from __future__ import annotations

import pytest
import torch

from uar.config import UARConfig, preset
from uar.decoding import beam_search, greedy, trigram_counts
from uar.model import UAR
from uar.modules.attention import int8_decoding
from uar.modules.memo import TokenMemo

TINY = UARConfig(
    vocab_size=30,
    max_len=16,
    image_size=32,
    visual_vocab_size=16,
    tokens_per_view=16,
    d_model=32,
    n_heads=4,
    d_ff=64,
    n_enc_layers=1,
    n_dec_layers=2,
    n_basis=64,
)


def make(name: str, seed: int = 0) -> tuple[UAR, torch.Tensor]:
    torch.manual_seed(seed)
    cfg = preset(name, TINY)
    model = UAR(cfg)
    if cfg.use_tir:
        model.stage = 2
        with torch.no_grad():
            model.tir.m.normal_(0, 0.01)  # a non-uniform mask, so TIR changes the attention
    if cfg.visual_encoder == "lsu":
        visual = torch.randint(0, cfg.visual_vocab_size, (4, cfg.n_views, cfg.tokens_per_view))
    else:
        visual = torch.rand(4, cfg.n_views, 1, cfg.image_size, cfg.image_size)
    return model, visual


@pytest.mark.parametrize("name", ["uar", "base", "fusion-addition"])
def test_cached_and_uncached_beam_search_identical(name):
    model, visual = make(name)
    cached = beam_search(model, visual, beam_size=3, use_cache=True)
    uncached = beam_search(model, visual, beam_size=3, use_cache=False)
    assert cached == uncached
    assert len(cached) == 4 and all(len(ids) <= TINY.max_len and 0 not in ids for ids in cached)
    forced = beam_search(model, visual, beam_size=3, min_len=TINY.max_len)
    assert forced == beam_search(model, visual, beam_size=3, min_len=TINY.max_len, use_cache=False)
    assert all(len(ids) == TINY.max_len for ids in forced)


@pytest.mark.parametrize("name", ["uar", "base"])
def test_cached_and_uncached_greedy_identical(name):
    model, visual = make(name)
    assert greedy(model, visual, use_cache=True) == greedy(model, visual, use_cache=False)
    forced = greedy(model, visual, min_len=10)
    assert forced == greedy(model, visual, min_len=10, use_cache=False)
    assert all(len(ids) >= 10 for ids in forced)


def test_cached_step_log_probs_match_recomputation():
    model, visual = make("uar")
    model.eval()
    with torch.inference_mode():
        a = model.init_decoding(visual, 2, 8, use_cache=True)
        b = model.init_decoding(visual, 2, 8, use_cache=False)
        prefix = torch.zeros(8, 1, dtype=torch.long)
        for _ in range(8):
            la, lb = model.decode_step(a, prefix), model.decode_step(b, prefix)
            assert torch.allclose(la, lb, atol=1e-5)
            prefix = torch.cat([prefix, torch.randint(1, TINY.vocab_size, (8, 1))], dim=1)
            rows = torch.tensor([1, 1, 2, 3, 5, 4, 7, 6])  # beams move only within their study's rows
            a.reorder(rows)
            prefix = prefix[rows]


def test_batched_equals_single_study_and_beam_one_is_greedy_without_blocking():
    model, visual = make("uar")
    batched = beam_search(model, visual)
    assert [beam_search(model, visual[i : i + 1])[0] for i in range(4)] == batched
    assert beam_search(model, visual, beam_size=1, block_trigrams=False) == greedy(model, visual)
    assert model.training  # generation restores the caller's mode


def test_beam_search_beats_or_matches_greedy_log_prob():
    model, visual = make("uar", seed=3)
    model.eval()

    def score(ids: list[int], i: int) -> float:
        """Summed log-probability of ``ids`` (and the eos when the report ended before max_len)."""
        targets = ids + ([0] if len(ids) < TINY.max_len else [])
        seq = [0, *targets]
        with torch.inference_mode():
            state = model.init_decoding(visual[i : i + 1], 1, TINY.max_len, use_cache=False)
            return sum(
                model.decode_step(state, torch.tensor([seq[: t + 1]]))[0, w].item()
                for t, w in enumerate(targets)
            )

    beams = beam_search(model, visual, beam_size=4, block_trigrams=False)
    greedy_ids = greedy(model, visual)
    for i in range(4):
        assert score(beams[i], i) >= score(greedy_ids[i], i) - 1e-4


def test_trigram_counts():
    seq = torch.tensor([[5, 6, 7, 5, 6], [1, 2, 3, 4, 5], [9, 9, 9, 9, 9]])
    counts = trigram_counts(seq, 10)
    assert counts[0].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]  # "5 6" was followed by 7
    assert counts[1].sum().item() == 0
    assert counts[2, 9].item() == 3  # "9 9 9" three times
    assert trigram_counts(seq[:, :2], 10).sum().item() == 0


def test_trigram_penalty_discourages_repeats():
    model, visual = make("uar", seed=1)
    with torch.no_grad():  # make the model strongly prefer word 3 everywhere
        model.head.bias.zero_()
        model.head.bias[3] = 50.0
    plain = beam_search(model, visual, block_trigrams=False)
    blocked = beam_search(model, visual, block_trigrams=True)
    assert plain[0][:3] == [3, 3, 3]
    assert blocked != plain


def test_step_words_match_aligning_them_and_follow_weight_changes():
    model, visual = make("uar")
    model.eval()
    visual, words = visual[:1], torch.tensor([4, 9, 4])
    with torch.inference_mode():
        model.init_decoding(visual, 3, 5, use_cache=True)
        direct = model.align(model.embed_words(words.unsqueeze(1), start=2))
        first = model.step_words(words, 2, model.basis_kv())
        assert torch.allclose(first, direct, atol=1e-6)
        assert torch.equal(model.step_words(words, 2, model.basis_kv()), first)  # from the memo
        assert model.word_memo.hits >= 3
        with int8_decoding():
            approx = model.step_words(words, 2, model.basis_kv())
        assert not torch.equal(approx, first)  # computed in its own mode, not read from fp32 rows
        assert torch.equal(model.step_words(words, 2, model.basis_kv()), first)
    with torch.no_grad():
        model.cra.gamma.mul_(1.5)  # training or loading changes the weights: the memo is emptied
    with torch.inference_mode():
        model.init_decoding(visual, 3, 5, use_cache=True)
        changed = model.step_words(words, 2, model.basis_kv())
        expected = model.align(model.embed_words(words.unsqueeze(1), start=2))
    assert not torch.allclose(changed, first, atol=1e-3)
    assert torch.allclose(changed, expected, atol=1e-6)


@pytest.mark.parametrize("name", ["uar", "no-lsu", "base"])
def test_generation_with_a_warm_memo_equals_generation_without_one(name):
    model, visual = make(name)
    studies = [visual[i : i + 1] for i in range(visual.shape[0])]
    warm = [beam_search(model, v, 3) for v in studies + studies]  # the second round reads the memo
    assert name == "base" or model.word_memo.hits > 0
    model.word_memo = TokenMemo(capacity=0)
    cold = [beam_search(model, v, 3) for v in studies + studies]
    assert warm == cold


def test_a_model_built_under_inference_mode_generates():
    # inference tensors have no version counter: the weight signatures behind the projected CRA
    # basis, the int8 copies and the word memo fall back to storage identity
    with torch.inference_mode():
        model, visual = make("uar")
        model.eval()
        first = beam_search(model, visual[:1], 3)
        assert beam_search(model, visual[:1], 3) == first
        with int8_decoding():
            assert len(beam_search(model, visual[:1], 3)) == 1
