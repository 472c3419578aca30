"""Training-time noise against memorising the training studies: visual token noise (LSU) and word
noise on the decoder's inputs (``TrainConfig.token_noise`` / ``word_noise``, ``uar train
--token-noise / --word-noise``)."""

from __future__ import annotations

import pytest
import torch

from tests.train.conftest import tiny_model_cfg, tiny_train_cfg
from uar.model import UAR
from uar.text.tokenizer import UNK_ID
from uar.train import train
from uar.train.data import noisy_tokens, noisy_words


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_token_noise_replaces_about_the_given_share_with_valid_codes_reproducibly() -> None:
    ids = torch.randint(0, 64, (8, 2, 196), generator=_gen(1))
    noised = noisy_tokens(ids, 0.25, 64, _gen(2))
    changed = float((noised != ids).float().mean())
    # a replaced id equals the old one 1 time in 64: 0.25 * 63 / 64 of the ids change
    assert 0.21 < changed < 0.28
    assert int(noised.min()) >= 0 and int(noised.max()) < 64
    assert torch.equal(noised, noisy_tokens(ids, 0.25, 64, _gen(2)))  # same generator state, same noise
    assert not torch.equal(noised, noisy_tokens(ids, 0.25, 64, _gen(3)))
    assert noisy_tokens(ids, 0.0, 64, _gen(2)) is ids


def test_word_noise_hides_words_only_never_bos_eos_or_padding() -> None:
    # [bos, w1..w5, eos, pad, pad] and a shorter report; 1 is <unk> already
    reports = torch.tensor([[0, 5, 6, 7, 8, 9, 0, 0, 0], [0, 3, 1, 4, 0, 0, 0, 0, 0]])
    noised = noisy_words(reports, 0.9, _gen(4))
    assert noised.shape == reports.shape
    assert torch.equal(noised[reports == 0], reports[reports == 0])  # bos, eos, padding kept
    hidden = noised != reports
    assert bool((noised[hidden] == UNK_ID).all())
    assert int(hidden.sum()) >= 4  # 0.9 of 7 real words
    assert torch.equal(noisy_words(reports, 0.9, _gen(4)), noised)
    assert noisy_words(reports, 0.0, _gen(4)) is reports


@pytest.mark.parametrize("share", [-0.1, 1.0, 1.5])
def test_shares_outside_zero_to_one_are_refused(share: float) -> None:
    with pytest.raises(ValueError, match="must be in"):
        noisy_tokens(torch.zeros(1, 2, 4, dtype=torch.long), share, 64, _gen())
    with pytest.raises(ValueError, match="must be in"):
        noisy_words(torch.zeros(1, 4, dtype=torch.long), share, _gen())


def test_token_noise_refuses_images() -> None:
    with pytest.raises(ValueError, match="not to images"):
        noisy_tokens(torch.zeros(1, 2, 1, 32, 32), 0.1, 64, _gen())


def test_the_decoder_reads_the_noised_words_while_the_targets_stay_the_report() -> None:
    torch.manual_seed(0)
    model = UAR(tiny_model_cfg(visual_vocab_size=64, tokens_per_view=16, vocab_size=12, dropout=0.0)).eval()
    visual = torch.randint(0, 64, (2, 2, 16))
    reports = torch.tensor([[0, 5, 6, 7, 8, 9, 0, 0], [0, 3, 2, 4, 0, 0, 0, 0]])
    clean = model(visual, reports, stage=2)
    same = model(visual, reports, stage=2, inputs=reports.clone())
    assert torch.allclose(clean["loss"], same["loss"])
    noised = model(visual, reports, stage=2, inputs=noisy_words(reports, 0.5, _gen(5)))
    assert not torch.allclose(clean["ce"], noised["ce"])
    assert torch.allclose(clean["global"], noised["global"])  # L_Global reads the real report
    with pytest.raises(ValueError, match="do not match"):
        model(visual, reports, stage=2, inputs=reports[:, :-1])


def test_a_noised_run_differs_from_a_clean_one_and_resumes_bit_identically(
    tiny_data, tiny_visual_tokenizer, tmp_path
) -> None:
    def run(out, noise: float, **kw):
        return train(
            tiny_data,
            out,
            tiny_model_cfg(dropout=0.0),
            tiny_train_cfg(token_noise=noise, word_noise=noise),
            visual_tokenizer_path=tiny_visual_tokenizer,
            progress=False,
            **kw,
        )

    run(tmp_path / "clean", 0.0)
    run(tmp_path / "straight", 0.3)
    run(tmp_path / "split", 0.3, max_steps=3)
    run(tmp_path / "split", 0.3, resume=True)
    clean, straight, split = (
        torch.load(tmp_path / n / "last.pt", weights_only=False) for n in ("clean", "straight", "split")
    )
    assert straight["progress"]["finished"] and split["progress"]["finished"]
    for name, t in straight["model"].items():
        assert torch.equal(t, split["model"][name]), name  # the same noise after the resume
    assert any(not torch.equal(t, clean["model"][n]) for n, t in straight["model"].items())


def test_a_bad_share_is_refused_before_any_data_is_read(tiny_data, tiny_visual_tokenizer, tmp_path) -> None:
    for changes in ({"token_noise": 1.5}, {"word_noise": -0.1}):
        with pytest.raises(ValueError, match="must be in"):
            train(
                tiny_data,
                tmp_path / "run",
                tiny_model_cfg(),
                tiny_train_cfg(**changes),
                visual_tokenizer_path=tiny_visual_tokenizer,
                progress=False,
            )
        assert not (tmp_path / "run" / "last.pt").exists()
