"""Lossless benchmark: `mlp` through the real CLI (start-up included), its linear-predictor
ablation, and the classical lossless codecs from the same run, on a folder of images.

    python -m dcomp.bench.lossless --dataset ../shared/data/kodak
    python -m dcomp.bench.lossless --memory ../shared/data/photos-train/001.png

Bits per sub-pixel are file bits / (W * H * channels); every codec's output is decoded
and compared with the original.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from dcomp import api
from dcomp.bench import runner, synthetic
from dcomp.classical import available_codecs
from dcomp.imageio import list_images, to_array

LOSSLESS_CODECS = ["png", "jpegls", "jpeg2000-lossless", "webp-lossless", "jxl-lossless"]
console = Console(width=120)


def _cli() -> list[str]:
    exe = shutil.which("dcomp")
    return [exe] if exe else [sys.executable, "-m", "dcomp"]


def _run_cli(args: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(_cli() + args, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"dcomp {' '.join(args)} failed: {proc.stderr.strip()}")
    return time.perf_counter() - start


def mlp_through_cli(path: Path, work: Path) -> dict:
    """Compress and decompress one image with the CLI; sizes, wall times, exactness."""
    dcz, png = work / (path.stem + ".dcz"), work / (path.stem + ".out.png")
    enc = _run_cli(["compress", str(path), "-m", "mlp", "-o", str(dcz), "--force"])
    dec = _run_cli(["decompress", str(dcz), "-o", str(png), "--force"])
    return {"bytes": dcz.stat().st_size, "encode_s": enc, "decode_s": dec, "exact": _same_pixels(path, png)}


def _same_pixels(original: Path, decoded: Path) -> bool:
    with Image.open(original) as a, Image.open(decoded) as b:
        return bool(np.array_equal(to_array(a)[0], to_array(b)[0]))


def mlp_batch_through_cli(paths: list[Path], work: Path) -> dict:
    """One `dcomp compress` over all images, one `dcomp decompress` over all files: start-up
    (Python, numba, the weights) paid once, as when a folder is archived."""
    out, back = work / "batch-dcz", work / "batch-png"
    enc = _run_cli(["compress", *map(str, paths), "-m", "mlp", "-o", f"{out}/", "--force", "--quiet"])
    dec = _run_cli(["decompress", *map(str, sorted(out.glob("*.dcz"))), "-o", f"{back}/", "--force", "--quiet"])
    exact = all(_same_pixels(p, back / (p.stem + ".png")) for p in paths)
    return {"encode_s_per_image": enc / len(paths), "decode_s_per_image": dec / len(paths), "exact": exact}


def startup_through_cli(work: Path) -> dict:
    """A 16x16 photo crop compressed and decompressed twice with an empty numba cache: the
    first run compiles the mlp kernels (and stores them), the second loads them."""
    png, dcz = work / "tiny.png", work / "tiny.dcz"
    Image.fromarray(np.random.default_rng(0).integers(90, 110, (16, 16, 3), dtype=np.uint8)).save(png)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(work / "numba-cache"))
    runs = []
    for _ in range(2):
        runs.append(_run_cli(["compress", str(png), "-o", str(dcz), "--force", "--quiet"], env)
                    + _run_cli(["decompress", str(dcz), "-o", str(work / "tiny.out.png"), "--force", "--quiet"], env))
    result = {"first_run_s": runs[0], "cached_run_s": runs[1]}
    console.print(f"mlp start-up, compress + decompress of a 16x16 image: {runs[0]:.2f} s with an empty kernel "
                  f"cache (compiling), {runs[1]:.2f} s from the cache", highlight=False)
    return result


def mlp_linear_ablation(arr: np.ndarray) -> int:
    """File size with a per-image least-squares linear predictor in place of the network."""
    return len(api.compress_report(arr, "mlp", device="cpu", encoder_options={"predictor": "linear"}).data)


def run_dataset(dataset: Path, limit: int | None, codec_names: list[str]) -> dict:
    paths = list_images(dataset)[:limit]
    if not paths:
        raise SystemExit(f"no images in {dataset}")
    codecs, notes = available_codecs(codec_names)
    for note in notes:
        console.print(f"[yellow]skipped[/] {note}")
    # The classical codecs are measured exactly as `dcomp bench` measures them.
    entries = [runner.Entry(c.name, "classical", True, [None]) for c in codecs]
    rows: dict[str, list[dict]] = {"mlp": [], "mlp-linear (ablation)": []}
    rows.update({c.name: [] for c in codecs})
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(paths, 1):
            with Image.open(path) as im:
                arr, _ = to_array(im)
            subpixels = arr.size
            r = mlp_through_cli(path, Path(tmp))
            rows["mlp"].append({"image": path.name, "bpsp": r["bytes"] * 8 / subpixels, **r})
            size = mlp_linear_ablation(arr)
            rows["mlp-linear (ablation)"].append({"image": path.name, "bpsp": size * 8 / subpixels})
            for point in runner.measure_image(path.name, arr, entries, "cpu", set()):
                if "error" in point:
                    console.print(f"[red]{point['codec']} failed on {path.name}:[/] {point['error']}")
                else:
                    rows[point["codec"]].append(point)
            console.print(f"[{i}/{len(paths)}] {path.name}: mlp {rows['mlp'][-1]['bpsp']:.3f} bpsp, "
                          f"enc {r['encode_s']:.2f} s, dec {r['decode_s']:.2f} s", highlight=False)
        batch = mlp_batch_through_cli(paths, Path(tmp))
    console.print(f"mlp, one CLI call over all {len(paths)} images: encode {batch['encode_s_per_image']:.2f} s, "
                  f"decode {batch['decode_s_per_image']:.2f} s per image, exact={batch['exact']}", highlight=False)
    return rows, batch


def summarize(rows: dict[str, list[dict]], title: str) -> dict:
    summary = {}
    for name, items in rows.items():
        s = {"bpsp": float(np.mean([x["bpsp"] for x in items]))}
        for key in ("encode_s", "decode_s"):
            if key in items[0]:
                s[key + "_mean"] = float(np.mean([x[key] for x in items]))
                s[key + "_max"] = float(np.max([x[key] for x in items]))
        if "exact" in items[0]:
            s["exact"] = all(x["exact"] for x in items)
        summary[name] = s
    ref = summary.get("jxl-lossless", {}).get("bpsp")
    table = Table(title=title)
    for col in ("codec", "bits/sub-pixel", "vs JPEG XL", "bit-exact", "encode s (mean/max)", "decode s (mean/max)"):
        table.add_column(col, justify="left" if col == "codec" else "right")
    for name, s in sorted(summary.items(), key=lambda kv: kv[1]["bpsp"]):
        table.add_row(name, f"{s['bpsp']:.3f}", f"{100 * (s['bpsp'] / ref - 1):+.1f}%" if ref else "-",
                      {True: "yes", False: "NO"}.get(s.get("exact"), "-"),
                      f"{s['encode_s_mean']:.2f} / {s['encode_s_max']:.2f}" if "encode_s_mean" in s else "-",
                      f"{s['decode_s_mean']:.2f} / {s['decode_s_max']:.2f}" if "decode_s_mean" in s else "-")
    console.print(table)
    return summary


def run_synthetic() -> dict:
    """mlp against PNG on generated screenshots, charts, slides, pixel art and text."""
    table = Table("image", "PNG bytes", "mlp bytes", "mlp / PNG", title="Synthetic images: mlp must stay below PNG")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, im in synthetic.all_images().items():
            path = Path(tmp) / f"{name}.png"
            im.save(path, optimize=True)
            png = path.stat().st_size
            r = mlp_through_cli(path, Path(tmp))
            out[name] = {"png_bytes": png, "mlp_bytes": r["bytes"], "exact": r["exact"]}
            table.add_row(name, str(png), str(r["bytes"]), f"{r['bytes'] / png:.3f}")
    console.print(table)
    return out


def run_memory(photo: Path, size: tuple[int, int] = (4000, 3000)) -> dict:
    """Round-trip a 4000x3000 photo through the CLI; report peak resident memory."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "big.png"
        with Image.open(photo) as im:
            im.convert("RGB").resize(size, Image.LANCZOS).save(src)
        r = mlp_through_cli(src, Path(tmp))
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {"size": size, "peak_rss_mb": round(peak_mb, 1), **r}
    console.print(f"{size[0]}x{size[1]} round trip: exact={r['exact']}, encode {r['encode_s']:.1f} s, "
                  f"decode {r['decode_s']:.1f} s, peak memory {peak_mb:.0f} MB (limit 2048 MB)", highlight=False)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, help="folder of images (e.g. the Kodak set)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--codecs", default=",".join(LOSSLESS_CODECS))
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--memory", type=Path, help="photo to upscale to 4000x3000 for the memory check")
    parser.add_argument("--json", type=Path, help="write all results here")
    args = parser.parse_args(argv)
    results: dict = {}
    if args.dataset:
        rows, batch = run_dataset(args.dataset, args.limit, args.codecs.split(","))
        results["dataset"] = str(args.dataset)
        results["summary"] = summarize(rows, f"Lossless on {args.dataset.name} ({len(rows['mlp'])} images)")
        results["mlp_batch"] = batch
        results["per_image"] = rows
        with tempfile.TemporaryDirectory() as tmp:
            results["mlp_startup"] = startup_through_cli(Path(tmp))
        if not args.no_synthetic:
            results["synthetic"] = run_synthetic()
    if args.memory:
        results["memory"] = run_memory(args.memory)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
