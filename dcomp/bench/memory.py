"""Peak memory of a large image round trip through the CLI, for any method.

    python -m dcomp.bench.memory --photo ../shared/data/photos-train/001.png -m cnn-ae-ft -q 4

The photo is resized to 4000x3000; compress and decompress each run as a child process,
whose peak resident memory the kernel reports when it exits (wait4).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _run(args: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of `dcomp ARGS` in a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dcomp", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"dcomp {' '.join(args)} failed: {err.strip()}")
    return seconds, usage.ru_maxrss / 1024


def run(photo: Path, method: str, quality: int | None, size: tuple[int, int] = (4000, 3000)) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        src, dcz, out = Path(tmp) / "big.png", Path(tmp) / "big.dcz", Path(tmp) / "out.png"
        with Image.open(photo) as im:
            im.convert("RGB").resize(size, Image.LANCZOS).save(src)
        q = ["-q", str(quality)] if quality else []
        enc_s, enc_mb = _run(["compress", str(src), "-m", method, *q, "-o", str(dcz), "--force"])
        dec_s, dec_mb = _run(["decompress", str(dcz), "-o", str(out), "--force"])
        with Image.open(src) as a, Image.open(out) as b:
            x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        mse = float(np.mean((x - y) ** 2))
        return {"method": method, "quality": quality, "size": list(size), "bytes": dcz.stat().st_size,
                "bpp": round(dcz.stat().st_size * 8 / (size[0] * size[1]), 4),
                "psnr": None if mse == 0 else round(10 * math.log10(255 ** 2 / mse), 3),
                "encode_s": round(enc_s, 1), "decode_s": round(dec_s, 1),
                "encode_peak_mb": round(enc_mb), "decode_peak_mb": round(dec_mb)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("-m", "--method", default="cnn-ae-ft")
    parser.add_argument("-q", "--quality", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.photo, args.method, args.quality)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
