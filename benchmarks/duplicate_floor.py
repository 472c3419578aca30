"""How many duplicate reports a decoder whose words depend on the drawn findings only would write.

A decoder that describes exactly what each image shows (every finding with its side, grade, zone and
device type) and nothing else writes the same report for two cases with the same description. On a
set written by ``uar data synthetic`` this script groups the cases of ``cases.jsonl`` by

- their positive CheXpert labels (``annotation.json`` ``labels`` == 1), and
- their full categorical finding description (continuous values such as the cardiothoracic ratio
  or a lesion's position dropped, scoliosis as present / absent),

and prints the share of cases in a group of two or more: the duplicate share such a decoder would
have (issue 4 asks for fewer than 20 % duplicated generated reports).

Usage: ``python benchmarks/duplicate_floor.py runs/default/test``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any


def categorical(x: Any) -> Hashable:
    """A hashable copy of a JSON value with every float dropped (dict keys sorted)."""
    if isinstance(x, dict):
        return tuple(sorted((k, categorical(v)) for k, v in x.items() if not isinstance(v, float)))
    if isinstance(x, list):
        return tuple(categorical(v) for v in x)
    return None if isinstance(x, float) else x


def shared_share(keys: Iterable[Hashable]) -> tuple[float, int, int]:
    """(share of items whose key occurs more than once, number of distinct keys, number of items)."""
    counts = Counter(keys)
    n = sum(counts.values())
    return sum(c for c in counts.values() if c > 1) / n, len(counts), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder written by `uar data synthetic`")
    args = parser.parse_args()
    annotation = json.loads((args.data / "annotation.json").read_text(encoding="utf-8"))
    studies = [s for split in annotation.values() for s in split]
    label_keys = [tuple(sorted(k for k, v in s["labels"].items() if v == 1)) for s in studies]
    cases = [json.loads(line)["case"] for line in (args.data / "cases.jsonl").open(encoding="utf-8")]
    finding_keys = []
    for case in cases:
        findings = dict(case["findings"])
        findings["scoliosis"] = findings["scoliosis"] != 0
        finding_keys.append(categorical(findings))
    for name, keys in (("positive labels", label_keys), ("categorical findings", finding_keys)):
        share, groups, n = shared_share(keys)
        print(f"grouped by {name:<21}: {groups:4d} distinct of {n} cases; {share:.1%} share a description")
    normal = sum(1 for k in label_keys if k == ("No Finding",)) / len(label_keys)
    print(f"normal cases (No Finding only): {normal:.1%}")


if __name__ == "__main__":
    main()
