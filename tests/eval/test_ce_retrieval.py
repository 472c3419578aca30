"""CE precision / recall / F1 and image-to-report retrieval, checked by hand on small cases."""

from __future__ import annotations

import pytest
import torch

from uar.eval.ce import CHEXPERT_5, CEResult, ce_from_reports, ce_scores, ce_table
from uar.eval.labeler import OBSERVATIONS
from uar.eval.retrieval import cosine_similarity_matrix, ranks_from_similarity, retrieval_metrics


def _labels(**values: int | None) -> dict[str, int | None]:
    out: dict[str, int | None] = dict.fromkeys(OBSERVATIONS)
    out.update({k.replace("_", " "): v for k, v in values.items()})
    return out


def test_ce_by_hand() -> None:
    predicted = [
        _labels(Cardiomegaly=1, Edema=1),  # tp Cardiomegaly, fp Edema
        _labels(
            Cardiomegaly=-1, Pleural_Effusion=1
        ),  # uncertain is not positive: fn Cardiomegaly; tp Effusion
        _labels(No_Finding=1),  # fn Effusion; tp No Finding
    ]
    reference = [
        _labels(Cardiomegaly=1, Edema=0),
        _labels(Cardiomegaly=1, Pleural_Effusion=1),
        _labels(No_Finding=1, Pleural_Effusion=1),
    ]
    ce = ce_scores(predicted, reference)
    # micro: tp = 1 (Cardiomegaly) + 1 (Effusion) + 1 (No Finding) = 3, fp = 1 (Edema), fn = 2
    assert (ce.micro.tp, ce.micro.fp, ce.micro.fn) == (3, 1, 2)
    assert ce.micro.precision == pytest.approx(3 / 4)
    assert ce.micro.recall == pytest.approx(3 / 5)
    assert ce.micro.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    per = ce.per_observation
    assert per["Cardiomegaly"].precision == 1.0 and per["Cardiomegaly"].recall == 0.5
    assert per["Edema"].precision == 0.0 and per["Edema"].recall == 0.0 and per["Edema"].f1 == 0.0
    assert per["Pleural Effusion"].f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert per["No Finding"].f1 == 1.0
    # macro: mean over all 14 observations, 0/0 counted as 0
    f1s = {"Cardiomegaly": 2 * 0.5 / 1.5, "Pleural Effusion": 2 * 0.5 / 1.5, "No Finding": 1.0}
    assert ce.macro_f1 == pytest.approx(sum(f1s.values()) / 14)
    assert ce.macro_precision == pytest.approx((1.0 + 1.0 + 1.0) / 14)
    # CheXpert-5: Cardiomegaly (tp 1, fn 1), Pleural Effusion (tp 1, fn 1), Edema (fp 1)
    ce5 = ce_scores(predicted, reference, CHEXPERT_5)
    assert (ce5.micro.tp, ce5.micro.fp, ce5.micro.fn) == (2, 1, 2)
    assert ce5.macro_f1 == pytest.approx((2 * 0.5 / 1.5) * 2 / 5)


def test_ce_round_trip_and_table() -> None:
    ce = ce_from_reports(
        ["Mild cardiomegaly. No pleural effusion.", "Small right pleural effusion."],
        ["The heart is enlarged. Small left pleural effusion.", "Right pleural effusion. No pneumothorax."],
    )
    assert ce.per_observation["Cardiomegaly"].tp == 1
    assert ce.per_observation["Pleural Effusion"].tp == 1 and ce.per_observation["Pleural Effusion"].fn == 1
    again = CEResult.from_dict(ce.to_dict("ce"), "ce")
    assert again == ce
    table = ce_table(ce)
    assert table.count("\n") == 14 + 3 and "| Cardiomegaly | 1.000 | 1.000 | 1.000 | 1 | 1 |" in table


def test_ce_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="unknown observations"):
        ce_scores([{"Nodule": 1}], [{}])
    with pytest.raises(ValueError, match="1, 0, -1 or null"):
        ce_scores([{"Edema": 2}], [{}])
    with pytest.raises(ValueError, match="non-empty subset"):
        ce_scores([{}], [{}], ["Nodule"])
    with pytest.raises(ValueError, match="predicted but"):
        ce_scores([{}], [])


def test_retrieval_by_hand() -> None:
    # 4 studies in 2-d: image vectors and report vectors chosen so the cosine matrix is easy to read.
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    rep = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 1.0], [-1.0, 1.0]])
    sim = cosine_similarity_matrix(img, rep)
    assert sim[0, 0] == pytest.approx(1.0) and sim[2, 2] == pytest.approx(1.0)
    assert sim[3, 3] == pytest.approx(-1.0)
    # row 0: correct 1.0 is the best -> rank 1
    # row 1 (image [0,1]): cos with reports = 0, 0.0995, 0.707, 0.707; correct 0.0995 -> rank 3
    # row 2 (image [1,1]/sqrt2): 0.707, 0.774, 1.0, 0 -> rank 1
    # row 3 (image [1,-1]/sqrt2): correct -1.0 is the worst -> rank 4
    ranks = ranks_from_similarity(sim)
    assert ranks.tolist() == [1, 3, 1, 4]
    m = retrieval_metrics(img, rep)
    assert m["recall_at_1"] == 0.5 and m["recall_at_5"] == 1.0 and m["recall_at_10"] == 1.0
    assert m["median_rank"] == 2.0 and m["mean_rank"] == 2.25 and m["n"] == 4


def test_retrieval_ties_are_pessimistic() -> None:
    same = torch.ones(5, 3)
    m = retrieval_metrics(same, same)
    assert m["recall_at_1"] == 0.0 and m["median_rank"] == 5.0


def test_retrieval_shape_errors() -> None:
    with pytest.raises(ValueError, match="image vectors but"):
        retrieval_metrics(torch.ones(3, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        cosine_similarity_matrix(torch.ones(3), torch.ones(3, 1))
