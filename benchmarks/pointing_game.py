"""Pointing game of the grounding maps on held-out synthetic studies, against two baselines, and the
time the maps add to a study.

For each study of ``--split`` of a synthetic set (``uar data synthetic``: its case parameters are
re-drawn from the study id, ``syn<seed>_<index>``, and checked against the stored labels) the model
writes its report (beam ``--beam``); the decoder's cross-attention over the report is read once and
combined by every rule of :mod:`uar.grounding`, each map spread by the checkpoint's smoothing (or
``--smoothing``); each sentence that names a localised finding the case has is a trial
(:mod:`uar.eval.pointing`). Prints hit rates per finding and overall for each rule, the centre-point
and random-point baselines, and the mean time of ``generate`` per study with maps off and on
(interleaved, one thread). ``--picture`` writes the frontal overlay of one study.

Usage::

    python benchmarks/pointing_game.py --data runs/default/test [--checkpoint CKPT] [--picture out.png]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from uar.data.images import load_image
from uar.eval.pointing import look, play, trials
from uar.generator import ReportGenerator
from uar.grounding import RULES
from uar.grounding_overlay import render_overlay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="synthetic set folder (annotation.json)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--checkpoint", type=Path, default=None, help="model (default: the embedded model)")
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--max-studies", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--speed-studies", type=int, default=20, help="studies timed with maps off and on")
    ap.add_argument("--picture", type=Path, default=None, help="write one study's frontal overlay here")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument(
        "--smoothing",
        type=float,
        default=None,
        help="Gaussian width of the maps, fraction of the view's side (default: the checkpoint's)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = ReportGenerator.load(args.checkpoint)
    looked = look(
        gen, args.data, args.split, max_studies=args.max_studies, beam_size=args.beam, batch=args.batch
    )
    heads = gen.grounding_heads
    smoothing = args.smoothing if args.smoothing is not None else gen.grounding_smoothing
    results: dict = {"studies": len(looked), "checkpoint": str(args.checkpoint or "embedded"), "rules": {}}
    results["heads"] = [list(h) for h in heads]
    results["smoothing"] = smoothing
    for rule in RULES:
        if rule == "heads" and not heads:
            continue
        s = play(looked, rule, heads, smoothing)
        per = {o: s.per_observation[o].rates() for o in sorted(s.per_observation)}
        results["rules"][rule] = {"overall": s.rates(), "per_observation": per}
    if args.picture:
        rule = "heads" if heads else "mean"
        example = next(item for item in looked if trials(item.maps(rule, heads, smoothing), item.regions))
        maps = example.maps(rule, heads, smoothing)
        picture = render_overlay(example.frontal, maps, 0, view_name="frontal")
        args.picture.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(args.picture, optimize=True)
        results["picture_study"] = example.study_id
    entries = json.loads((args.data / "annotation.json").read_text())[args.split]
    images_dir = args.data / "images"
    # speed: one study at a time, maps off / on interleaved
    timed = {False: 0.0, True: 0.0}
    n_speed = min(args.speed_studies, len(entries))
    for e in entries[:n_speed]:
        study = tuple(load_image(images_dir / p) for p in e["image_path"])
        for maps in (False, True):
            t0 = time.perf_counter()
            gen.generate(*study, beam_size=args.beam, maps=maps)
            timed[maps] += time.perf_counter() - t0
    off, on = timed[False] / max(n_speed, 1), timed[True] / max(n_speed, 1)
    results["speed"] = {"studies": n_speed, "off_s": off, "on_s": on, "added": on / off - 1 if off else 0.0}
    print(
        f"{results['studies']} reports; grounding heads of the checkpoint: {results['heads'] or 'none'};"
        f" map smoothing {smoothing:.3f} of the view's side"
    )
    for rule, r in results["rules"].items():
        o = r["overall"]
        rates = f"map {o['map']:.3f}  centre {o['centre']:.3f}  random {o['random']:.3f}"
        print(f"rule {rule}: {o['n']} trials, hit rate {rates}")
        for name, p in r["per_observation"].items():
            rates = f"map {p['map']:.3f}  centre {p['centre']:.3f}  random {p['random']:.3f}"
            print(f"    {name:18s} n={p['n']:4d}  {rates}")
    sp = results["speed"]
    print(f"generate per study: maps off {sp['off_s']:.3f} s, on {sp['on_s']:.3f} s (+{sp['added']:.1%})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
