"""Turn measured points into curves, BD-rates, tables, plots and a Markdown report.

Plots: `rd-psnr`, `rd-ms-ssim` (MS-SSIM in dB) and `rd-haarpsi` for the lossy curves,
`lossless-bpsp` (bits per sub-pixel, one bar per codec) for the lossless ones: a lossless method is
a single point at infinite PSNR, which no RD plot can show. In a run that measured dcomp methods a
plot is written only if it shows one of them, so lossless-only runs get no RD plot of the classical
codecs alone (nor an rd-haarpsi plot from points measured before HaarPSI was, which lack it).
"""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from dcomp import metrics
from dcomp.bench import published
from dcomp.registry import METHODS

PSNR_CAP = 100.0  # identical images have infinite PSNR; cap it so averages stay finite
PLOTS = ("rd-*.png", "rd-*.svg", "lossless-*.png", "lossless-*.svg")
OUTPUTS = ("points.csv", "summary.json", "report.md", *PLOTS)  # the files build() writes (globs)
ANCHORS = ("jpeg", "jpeg2000", "webp", "avif", published.HYPERPRIOR)


PERCEPTUAL = ("haarpsi", "swd_patches")  # see perceptual; absent from points measured before them


def _mean_over_all(items: list[dict], key: str) -> float | None:
    """The mean of `key` if every item has it, else None: a mean over only some of the images
    (say, those measured after a metric was added) would not match the point's bpp and PSNR."""
    values = [p.get(key) for p in items]
    return None if any(v is None for v in values) else float(np.mean(values))


def curves(points: list[dict]) -> dict[str, list[dict]]:
    """Per lossy codec, one point per setting: the mean over the images that have it."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for p in points:
        if "error" not in p and not p.get("lossless"):
            groups[(p["codec"], json.dumps(p["setting"]))].append(p)
    out: dict[str, list[dict]] = defaultdict(list)
    for (codec, setting), items in groups.items():
        ms = [p["ms_ssim"] for p in items if p.get("ms_ssim") is not None]
        out[codec].append({
            "setting": json.loads(setting), "images": len(items),
            "bpp": float(np.mean([p["bpp"] for p in items])),
            "psnr": float(np.mean([min(p["psnr"], PSNR_CAP) for p in items])),
            "ssim": float(np.mean([p["ssim"] for p in items])),
            "ms_ssim": float(np.mean(ms)) if ms else None,
            "ms_ssim_scales": min((p.get("ms_ssim_scales") or 0) for p in items),
            **{key: _mean_over_all(items, key) for key in PERCEPTUAL},
            "encode_s": float(np.mean([p["encode_s"] for p in items])),
            "decode_s": float(np.mean([p["decode_s"] for p in items])),
            "peak_mb": float(np.max([p["peak_mb"] for p in items])),
        })
    return {k: sorted(v, key=lambda c: c["bpp"]) for k, v in out.items()}


def lossless_summary(points: list[dict]) -> dict[str, dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for p in points:
        if "error" not in p and p.get("lossless"):
            groups[p["codec"]].append(p)
    return {codec: {"images": len(items),
                    "bpsp": float(np.mean([p["bpsp"] for p in items])),
                    "bpp": float(np.mean([p["bpp"] for p in items])),
                    "exact": all(p["exact"] for p in items),
                    "encode_s": float(np.mean([p["encode_s"] for p in items])),
                    "decode_s": float(np.mean([p["decode_s"] for p in items])),
                    "peak_mb": float(np.max([p["peak_mb"] for p in items]))}
            for codec, items in groups.items()}


def _ms_ssim_db(point: dict) -> float | None:
    """MS-SSIM as -10 log10(1 - MS-SSIM): a scale on which its curves are as straight as PSNR's."""
    v = point.get("ms_ssim")
    return None if v is None else -10 * float(np.log10(max(1e-10, 1 - v)))


def bd_table(curve_map: dict[str, list[dict]], anchors=ANCHORS, metric: str = "psnr") -> dict[str, dict[str, float | None]]:
    """BD-rate (%) of every curve against each anchor present, on PSNR or ("ms_ssim") on
    MS-SSIM in dB (curves without MS-SSIM, such as published ones, are left out)."""
    quality = (lambda p: p["psnr"]) if metric == "psnr" else _ms_ssim_db
    usable = {k: v for k, v in curve_map.items() if all(quality(p) is not None for p in v)}
    table = {}
    for name, pts in usable.items():
        row = {}
        for anchor in anchors:
            if anchor in usable:
                ref = usable[anchor]
                row[anchor] = metrics.bd_rate([p["bpp"] for p in ref], [quality(p) for p in ref],
                                              [p["bpp"] for p in pts], [quality(p) for p in pts])
        table[name] = row
    return table


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = [out_dir / f"{stem}.{ext}" for ext in ("png", "svg")]
    for path in paths:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return paths


RD_AXES = (("psnr", "PSNR (dB, RGB)", lambda v: v),
           ("ms_ssim", "MS-SSIM (dB): −10·log10(1 − MS-SSIM)", metrics.ms_ssim_db),
           ("haarpsi", "HaarPSI (higher is better)", lambda v: v))


def _shows_dcomp(names, measured: set[str]) -> bool:
    """Whether a plot of these codecs is worth writing: it must show a dcomp method the run
    measured (a plot of the classical codecs alone says nothing about dcomp), unless none was."""
    return not measured or any(name in measured for name in names)


def _curves_with(curve_map: dict[str, list[dict]], key: str) -> dict[str, list[dict]]:
    """The curves' points that have a value of `key`; curves with none left out."""
    having = {name: [p for p in pts if p.get(key) is not None] for name, pts in curve_map.items()}
    return {name: pts for name, pts in having.items() if pts}


def plot_rd(curve_map: dict[str, list[dict]], out_dir: Path, title: str,
            measured: set[str] | frozenset[str] = frozenset()) -> list[Path]:
    """rd-psnr, rd-ms-ssim and rd-haarpsi (PNG and SVG), each only where it has a curve that
    shows one of the `measured` dcomp methods (any curve if none was); dcomp's drawn thicker."""
    plt = _pyplot()
    written = []
    for key, label, scale in RD_AXES:
        drawn = _curves_with(curve_map, key)
        if not drawn or not _shows_dcomp(drawn, measured):
            continue
        fig, ax = plt.subplots(figsize=(7, 5))
        for name, pts in sorted(drawn.items()):
            ax.plot([p["bpp"] for p in pts], [scale(p[key]) for p in pts], marker="o", ms=3,
                    lw=2.2 if name in METHODS else 1.2, ls="--" if pts[0].get("published") else "-", label=name)
        ax.set_xlabel("bits per pixel (file size)")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written += _save(fig, out_dir, f"rd-{key.replace('_', '-')}")
        plt.close(fig)
    return written


def plot_lossless(lossless: dict[str, dict], out_dir: Path, title: str) -> list[Path]:
    """lossless-bpsp (PNG and SVG): bits per sub-pixel per codec, best on top, dcomp's in colour."""
    plt = _pyplot()
    ranked = sorted(lossless.items(), key=lambda kv: kv[1]["bpsp"], reverse=True)
    names = [name for name, _ in ranked]
    values = [s["bpsp"] for _, s in ranked]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(ranked)))
    bars = ax.barh(names, values, color=["tab:orange" if n in METHODS else "tab:gray" for n in names])
    ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=8)
    ax.set_xlabel("bits per sub-pixel (file size; lower is better)")
    ax.set_title(f"{title}: lossless")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.15)  # room for the value labels
    written = _save(fig, out_dir, "lossless-bpsp")
    plt.close(fig)
    return written


def write_plots(points: list[dict], curve_map: dict, lossless: dict, out_dir: Path, title: str) -> list[Path]:
    """Write the plots that apply, after removing those of an earlier build (so none is stale)."""
    for pattern in PLOTS:
        for old in out_dir.glob(pattern):
            old.unlink()
    measured = {p["codec"] for p in points if p["codec"] in METHODS}
    written = plot_rd(curve_map, out_dir, title, measured)
    if lossless and _shows_dcomp(lossless, measured):
        written += plot_lossless(lossless, out_dir, title)
    return written


def write_csv(points: list[dict], path: Path) -> None:
    keys = ["image", "codec", "setting", "width", "height", "channels", "bytes", "bpp", "bpsp", "psnr", "ssim",
            "ms_ssim", "ms_ssim_scales", *PERCEPTUAL, "exact", "encode_s", "decode_s", "peak_mb", "error"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, keys, extrasaction="ignore")
        writer.writeheader()
        for p in points:
            writer.writerow({k: json.dumps(v) if k == "setting" else v for k, v in p.items()})


def _fmt(v, spec=".2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


def _perceptual_tables(curve_map: dict[str, list[dict]]) -> list[str]:
    """Markdown: per measured lossy codec, its points with HaarPSI and the patch SWD beside bpp
    and PSNR (where a GAN decoder's trade shows: a little PSNR for texture)."""
    lines = ["## Lossy: perceptual and texture metrics per codec (mean over images)", "",
             "HaarPSI: 0..1, higher is better. SWD patches: sliced Wasserstein distance between the "
             "7×7 luma patches of original and reconstruction (grey levels), lower is better; blur raises "
             "it. – where a point's images lack the metric (measured before it existed).", ""]
    for name, pts in sorted(curve_map.items()):
        if pts[0].get("published"):
            continue
        lines += [f"### {name}", "", "| setting | bpp | PSNR | HaarPSI | SWD patches |", "|---|---|---|---|---|"]
        lines += [f"| {p['setting']} | {p['bpp']:.3f} | {p['psnr']:.2f} | {_fmt(p.get('haarpsi'), '.4f')} | "
                  f"{_fmt(p.get('swd_patches'), '.3f')} |" for p in pts]
        lines.append("")
    return lines


def _bd_lines(heading: str, bd: dict, anchors: list[str]) -> list[str]:
    anchors = [a for a in anchors if any(a in row for row in bd.values())]
    lines = [heading, "", "| curve | " + " | ".join(f"vs {a}" for a in anchors) + " |",
             "|---" * (len(anchors) + 1) + "|"]
    for name in sorted(bd):
        lines.append(f"| {name} | " + " | ".join(f"{_fmt(bd[name].get(a), '+.1f')}%" if bd[name].get(a)
                                                 is not None else "–" for a in anchors) + " |")
    return lines + [""]


def markdown(title: str, settings: dict, lossless: dict, curve_map: dict, bd: dict, plots: list[Path],
             bd_ms_ssim: dict | None = None) -> str:
    lines = [f"# {title}", "", f"Images: {settings.get('images')} · started {settings.get('started')} · "
             f"versions: " + ", ".join(f"{k} {v}" for k, v in settings.get("versions", {}).items() if v), ""]
    if lossless:
        ref = lossless.get("jxl-lossless", {}).get("bpsp")
        lines += ["## Lossless", "", "| codec | bits/sub-pixel | vs JPEG XL | bit-exact | encode s | decode s |",
                  "|---|---|---|---|---|---|"]
        for name, s in sorted(lossless.items(), key=lambda kv: kv[1]["bpsp"]):
            rel = f"{100 * (s['bpsp'] / ref - 1):+.1f}%" if ref else "–"
            lines.append(f"| {name} | {s['bpsp']:.3f} | {rel} | {'yes' if s['exact'] else 'NO'} | "
                         f"{s['encode_s']:.2f} | {s['decode_s']:.2f} |")
        lines.append("")
    if curve_map:
        anchors = [a for a in ANCHORS if a in curve_map]
        lines += _bd_lines("## Lossy: BD-rate on PSNR (negative = fewer bits than the anchor)", bd, anchors)
        if bd_ms_ssim:
            lines += _bd_lines("## Lossy: BD-rate on MS-SSIM, in dB as -10 log10(1 - MS-SSIM)", bd_ms_ssim, anchors)
        lines += ["## Lossy: points (mean over images)", "",
                  "| codec | setting | bpp | PSNR | SSIM | MS-SSIM (scales) | encode s | decode s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, pts in sorted(curve_map.items()):
            for p in pts:
                if p.get("published"):
                    lines.append(f"| {name} | – | {p['bpp']:.3f} | {p['psnr']:.2f} | – | – | – | – |")
                    continue
                lines.append(f"| {name} | {p['setting']} | {p['bpp']:.3f} | {p['psnr']:.2f} | {p['ssim']:.4f} | "
                             f"{_fmt(p['ms_ssim'], '.4f')} ({p['ms_ssim_scales']}) | {p['encode_s']:.3f} | "
                             f"{p['decode_s']:.3f} |")
        lines.append("")
        lines += _perceptual_tables(curve_map)
    for path in plots:
        if path.suffix == ".png":
            lines += [f"![{path.stem}]({path.name})", ""]
    lines += ["Files: `points.jsonl` / `points.csv` (every point), `summary.json`, `settings.json` (how to reproduce).",
              ""]
    return "\n".join(lines)


def build(points: list[dict], out_dir: Path, title: str) -> tuple[dict, list[Path]]:
    """Write points.csv, summary.json, report.md and the plots that apply; return the summary
    and the paths written."""
    settings = json.loads((out_dir / "settings.json").read_text()) if (out_dir / "settings.json").exists() else {}
    curve_map = curves(points)
    if curve_map:
        curve_map.update(published.curves_for(settings.get("dataset_label"), settings.get("images")))
    lossless = lossless_summary(points)
    bd = bd_table(curve_map)
    bd_ms_ssim = bd_table(curve_map, metric="ms_ssim")
    written = write_plots(points, curve_map, lossless, out_dir, title)
    write_csv(points, out_dir / "points.csv")
    summary = {"title": title, "lossless": lossless, "curves": curve_map, "bd_rate_psnr": bd,
               "bd_rate_ms_ssim": bd_ms_ssim, "errors": [p for p in points if "error" in p][:50]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "report.md").write_text(markdown(title, settings, lossless, curve_map, bd, written, bd_ms_ssim))
    return summary, [out_dir / "points.csv", out_dir / "summary.json", out_dir / "report.md", *written]
