"""Methods that share a bitstream, image by image: what another decoder changes.

    python -m dcomp.bench.compare results/bench-kodak-gan --base cnn-ae-ft --methods gan-ae,gan-ae-dc

For each method and setting (quality), against the base at the same setting (hence the same
file size): the mean PSNR difference, the worst one, and on how many images the texture
statistic (SWD of patches, lower is closer) and HaarPSI are better than the base's, and the
ratio of decoding times. Reads the
run's points.jsonl; prints a Markdown table and writes it as JSON with --json.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def compare(points: list[dict], base: str, methods: list[str]) -> list[dict]:
    by_key = {(p["codec"], p.get("setting"), p["image"]): p for p in points if "error" not in p}
    rows = []
    for method in methods:
        per_setting = defaultdict(list)
        for (codec, setting, image), point in by_key.items():
            ref = by_key.get((base, setting, image))
            if codec == method and ref is not None:
                per_setting[setting].append((point, ref))
        for setting, pairs in sorted(per_setting.items()):
            drops = [ref["psnr"] - p["psnr"] for p, ref in pairs]
            rows.append({
                "method": method, "setting": setting, "images": len(pairs),
                "bpp": sum(p["bpp"] for p, _ in pairs) / len(pairs),
                "bpp_base": sum(ref["bpp"] for _, ref in pairs) / len(pairs),
                "psnr_drop_mean": sum(drops) / len(drops), "psnr_drop_max": max(drops),
                "swd_better": sum(p["swd_patches"] < ref["swd_patches"] for p, ref in pairs),
                "haarpsi_better": sum(p["haarpsi"] > ref["haarpsi"] for p, ref in pairs),
                "swd_mean": sum(p["swd_patches"] for p, _ in pairs) / len(pairs),
                "swd_base_mean": sum(ref["swd_patches"] for _, ref in pairs) / len(pairs),
                "decode_time_ratio": sum(p["decode_s"] for p, _ in pairs) / sum(ref["decode_s"] for _, ref in pairs),
            })
    return rows


def markdown(rows: list[dict], base: str) -> str:
    lines = [f"| method | quality | images | bpp (= {base}) | PSNR drop mean / max (dB) | SWD mean ({base}) "
             f"| images with lower SWD | images with higher HaarPSI | decode time / {base}'s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['setting']} | {r['images']} | {r['bpp']:.3f} ({r['bpp_base']:.3f}) "
                     f"| {r['psnr_drop_mean']:.2f} / {r['psnr_drop_max']:.2f} "
                     f"| {r['swd_mean']:.3f} ({r['swd_base_mean']:.3f}) | {r['swd_better']} of {r['images']} "
                     f"| {r['haarpsi_better']} of {r['images']} | {r['decode_time_ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a results folder of `dcomp bench`")
    parser.add_argument("--base", default="cnn-ae-ft")
    parser.add_argument("--methods", default="gan-ae,gan-ae-dc")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    points = [json.loads(line) for line in (args.run / "points.jsonl").read_text().splitlines() if line.strip()]
    rows = compare(points, args.base, args.methods.split(","))
    print(markdown(rows, args.base))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
