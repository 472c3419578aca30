"""NLG metrics through pycocoevalcap, checked against values worked out by hand."""

from __future__ import annotations

import math
import subprocess

import pytest

from uar.eval.metrics import METRIC_KEYS, nlg_metrics

REF = "the heart is normal in size ."  # 7 tokens
HYP = "the heart is normal ."  # 5 tokens


@pytest.fixture(scope="module")
def one_pair() -> dict[str, float]:
    return nlg_metrics([REF], [HYP])


def test_bleu_by_hand(one_pair: dict[str, float]) -> None:
    # Clipped n-gram precisions of HYP against REF:
    #   1-grams the heart is normal .                    5/5
    #   2-grams the-heart heart-is is-normal | normal-.   3/4
    #   3-grams the-heart-is heart-is-normal | is-normal-. 2/3
    #   4-grams the-heart-is-normal | heart-is-normal-.   1/2
    # Brevity penalty: hypothesis 5 < reference 7 -> exp(1 - 7/5).
    bp = math.exp(1 - 7 / 5)
    expected = {
        "bleu_1": bp * 1.0,
        "bleu_2": bp * (1.0 * 3 / 4) ** (1 / 2),
        "bleu_3": bp * (1.0 * 3 / 4 * 2 / 3) ** (1 / 3),
        "bleu_4": bp * (1.0 * 3 / 4 * 2 / 3 * 1 / 2) ** (1 / 4),
    }
    for key, value in expected.items():
        assert one_pair[key] == pytest.approx(value, rel=1e-6), key


def test_rouge_l_by_hand(one_pair: dict[str, float]) -> None:
    # LCS(HYP, REF) = "the heart is normal ." = 5; P = 5/5, R = 5/7, beta = 1.2.
    p, r, beta2 = 1.0, 5 / 7, 1.2**2
    assert one_pair["rouge_l"] == pytest.approx((1 + beta2) * p * r / (r + beta2 * p), rel=1e-9)


def test_rouge_l_lcs_skips_gaps() -> None:
    # LCS("no effusion or pneumothorax is seen .", "there is no pleural effusion or pneumothorax .")
    # = "no effusion or pneumothorax ." = 5 tokens; P = 5/7, R = 5/8.
    hyp = "no effusion or pneumothorax is seen ."
    ref = "there is no pleural effusion or pneumothorax ."
    p, r, beta2 = 5 / 7, 5 / 8, 1.2**2
    got = nlg_metrics([ref], [hyp], meteor=False)["rouge_l"]
    assert got == pytest.approx((1 + beta2) * p * r / (r + beta2 * p), rel=1e-9)


def test_bleu_is_corpus_level() -> None:
    # Corpus BLEU pools the n-gram counts: two studies, clipped unigram matches 3 + 0 of 3 + 3 tokens,
    # total length 6 = reference length 6 (no brevity penalty) -> BLEU-1 = 3/6.
    refs = ["heart is normal", "lungs are clear"]
    hyps = ["heart is normal", "no acute disease"]
    got = nlg_metrics(refs, hyps, meteor=False)
    assert got["bleu_1"] == pytest.approx(0.5, rel=1e-6)


CORPUS_REFS = [
    "the heart is normal in size . the lungs are clear .",
    "there is a small left pleural effusion . no pneumothorax .",
    "mild cardiomegaly . bibasilar atelectasis .",
]


def test_cider_properties() -> None:
    perfect = nlg_metrics(CORPUS_REFS, CORPUS_REFS, meteor=False)
    assert perfect["cider"] == pytest.approx(10.0, rel=1e-9)  # CIDEr-D: 10 x mean cosine of 1
    disjoint = nlg_metrics(CORPUS_REFS, ["alpha beta", "gamma delta", "epsilon zeta"], meteor=False)
    assert disjoint["cider"] == 0.0
    partial = nlg_metrics(
        CORPUS_REFS,
        ["the heart is normal .", "small left pleural effusion .", "cardiomegaly ."],
        meteor=False,
    )
    assert 0.0 < partial["cider"] < 10.0
    # Study order does not matter; document frequencies come from the references of the corpus.
    order = [2, 0, 1]
    shuffled = nlg_metrics(
        [CORPUS_REFS[i] for i in order],
        [["the heart is normal .", "small left pleural effusion .", "cardiomegaly ."][i] for i in order],
        meteor=False,
    )
    assert shuffled["cider"] == pytest.approx(partial["cider"], rel=1e-9)
    # A single study gives every n-gram document frequency 1 = N, so idf = 0 and CIDEr = 0.
    assert nlg_metrics([CORPUS_REFS[0]], [CORPUS_REFS[0]], meteor=False)["cider"] == 0.0


def _java_processes() -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return sum("meteor-1.5.jar" in line for line in out.splitlines())


def test_meteor_runs_and_stops() -> None:
    before = _java_processes()
    same = nlg_metrics(CORPUS_REFS, CORPUS_REFS)
    assert set(same) == set(METRIC_KEYS)
    assert same["meteor"] > 0.95
    disjoint = nlg_metrics(CORPUS_REFS, ["alpha beta", "gamma delta", "epsilon zeta"])
    assert disjoint["meteor"] < 0.05
    # Newlines and the METEOR field separator in a text must not desynchronise the jar.
    odd = nlg_metrics(["the heart is normal"], ["the heart ||| is\nnormal"])
    assert odd["meteor"] > 0.9
    assert _java_processes() == before  # every METEOR process was shut down


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="references but"):
        nlg_metrics(["a"], ["a", "b"], meteor=False)
    with pytest.raises(ValueError, match="no studies"):
        nlg_metrics([], [], meteor=False)
