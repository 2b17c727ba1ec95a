"""Published rate-distortion curves to compare against (data, not code).

CompressAI's own measurements of its pre-trained models on the 24 Kodak images (PSNR on
RGB, bpp from the real bitstreams), from the CompressAI repository's
results/image/kodak/compressai-bmshj2018-{factorized,hyperprior}_mse_cpu.json. They only
apply to the full Kodak set, so the report adds them only there.
"""
from __future__ import annotations

KODAK: dict[str, list[tuple[float, float]]] = {
    "bmshj2018-factorized (published)": [
        (0.1226, 26.909), (0.1885, 28.218), (0.2878, 29.617), (0.4404, 31.277),
        (0.6481, 32.956), (0.9670, 35.381), (1.3512, 37.397), (1.8333, 39.621)],
    "bmshj2018-hyperprior (published)": [
        (0.1313, 27.582), (0.2089, 29.197), (0.3199, 30.972), (0.4784, 32.838),
        (0.6687, 34.526), (0.9388, 36.743), (1.2592, 38.584), (1.6602, 40.557)],
}
HYPERPRIOR = "bmshj2018-hyperprior (published)"


def curves_for(dataset_label: str | None, images: int | None) -> dict[str, list[dict]]:
    """Reference curves in the report's curve format, for the data set measured."""
    if (dataset_label or "").lower() != "kodak" or images != 24:  # the loader labels it "Kodak"
        return {}
    return {name: [{"setting": None, "images": 24, "bpp": b, "psnr": p, "ssim": None, "ms_ssim": None,
                    "ms_ssim_scales": None, "haarpsi": None, "swd_patches": None, "encode_s": None, "decode_s": None,
                    "peak_mb": None, "published": True}
                   for b, p in pts] for name, pts in KODAK.items()}
