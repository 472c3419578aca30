"""The memo of aligned word embeddings: same numbers as aligning, kept only while the weights stay."""

from __future__ import annotations

import threading

import torch

from uar.config import UARConfig, preset
from uar.generation import beam_search
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


def table(ids: list[int]) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.float32).unsqueeze(1).repeat(1, 4)  # row w = [w, w, w, w]


def test_token_memo_computes_each_missing_row_once():
    memo = TokenMemo()
    asked: list[list[int]] = []

    def compute(ids: list[int]) -> torch.Tensor:
        asked.append(ids)
        return table(ids)

    assert torch.equal(memo.rows("a", 0, [3, 5, 3], compute), table([3, 5, 3]))
    assert asked == [[3, 5]]  # unique missing tokens, once
    assert torch.equal(memo.rows("a", 0, [5, 7], compute), table([5, 7]))
    assert asked[-1] == [7] and (memo.hits, memo.misses) == (1, 4)  # rows looked up
    memo.rows("a", 1, [5], compute)  # another position
    memo.rows("b", 0, [5], compute)  # another mode
    assert asked[-2:] == [[5], [5]] and len(memo) == 5


def test_token_memo_validate_capacity_and_off():
    memo = TokenMemo(capacity=3)
    memo.validate("weights-1")
    memo.rows("a", 0, [1, 2], table)
    memo.validate("weights-1")
    assert len(memo) == 2  # same signature: kept
    memo.validate("weights-2")
    assert len(memo) == 0  # the weights changed: emptied
    memo.rows("a", 0, [1, 2, 3], table)
    memo.rows("a", 1, [4], table)  # would exceed the capacity: emptied first
    assert len(memo) == 1
    off = TokenMemo(capacity=0)
    assert torch.equal(off.rows("a", 0, [2, 2], table), table([2, 2])) and len(off) == 0


def test_token_memo_shared_between_threads():
    memo = TokenMemo()
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            gen = torch.Generator().manual_seed(seed)
            for t in range(50):
                ids = torch.randint(0, 20, (3,), generator=gen).tolist()
                assert torch.equal(memo.rows("a", t % 7, ids, table), table(ids))
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def model_and_visual(name: str = "uar") -> tuple[UAR, torch.Tensor]:
    torch.manual_seed(0)
    cfg = preset(name, TINY)
    model = UAR(cfg).eval()
    visual = (
        torch.randint(0, cfg.visual_vocab_size, (1, cfg.n_views, cfg.tokens_per_view))
        if cfg.visual_encoder == "lsu"
        else torch.rand(1, cfg.n_views, 1, cfg.image_size, cfg.image_size)
    )
    return model, visual


def test_step_words_match_aligning_them_and_follow_weight_changes():
    model, visual = model_and_visual()
    words = torch.tensor([4, 9, 4])
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


def test_generation_with_a_warm_memo_equals_generation_without_one():
    for name in ("uar", "no-lsu", "base"):
        model, _ = model_and_visual(name)
        cfg = model.cfg
        torch.manual_seed(1)
        studies = (
            [torch.randint(0, cfg.visual_vocab_size, (1, cfg.n_views, cfg.tokens_per_view)) for _ in range(4)]
            if cfg.visual_encoder == "lsu"
            else [torch.rand(1, cfg.n_views, 1, cfg.image_size, cfg.image_size) for _ in range(4)]
        )
        warm = [beam_search(model, v, 3) for v in studies + studies]  # the second round reads the memo
        model.word_memo = TokenMemo(capacity=0)
        cold = [beam_search(model, v, 3) for v in studies + studies]
        assert warm == cold
