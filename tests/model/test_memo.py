"""TokenMemo: rows computed once per (mode, position, token), emptied with a new signature."""

from __future__ import annotations

import threading

import torch

from uar.modules.memo import TokenMemo


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
