"""Benchmark data sets: CIFAR-10, Kodak, or a local folder / archive, as lists of images.

    resolve_dataset("cifar10")            # official CIFAR-10 python archive (downloaded once, MD5 checked)
    resolve_dataset("kodak")              # the 24 Kodak PNGs (downloaded once, SHA-256 checked)
    resolve_dataset("path/to/folder")     # images in a folder, an extracted cifar-10-batches-py/, or a .tar.gz

Downloads go into a cache folder: `data_dir` if given, else $DCOMP_DATA_DIR, else ~/.cache/dcomp.
A download is streamed into `<name>.part`, checked, then renamed into place, so the cache never
holds a half or unchecked file. Every expected failure raises DatasetError (a DcompError: the CLI
prints it as one line).

Offline use: put `cifar-10-python.tar.gz` (or its extracted `cifar-10-batches-py/`, or another
`cifar-10*python*.tar.gz` such as the project's subset) into the cache folder, or the Kodak PNGs
into `<cache>/kodak/`; files already there with the right checksum are used without network.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import numpy as np

from dcomp.bench.folders import make_folder, remove_empty
from dcomp.errors import DcompError

__all__ = [
    "BenchImage",
    "DatasetError",
    "resolve_dataset",
    "download",
    "cache_dir",
    "CIFAR10_URL",
    "CIFAR10_MD5",
    "KODAK_BASE_URL",
    "KODAK_SHA256",
]

# --- sources (module constants; the env vars DCOMP_CIFAR10_URL / DCOMP_KODAK_URL override the URLs) ---

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_OFFICIAL_COUNTS = {"test": 10000, "train": 50000}

KODAK_BASE_URL = "https://r0k.us/graphics/kodak/kodak/"
# SHA-256 of the Kodak PNGs this project uses: the files in shared/data/kodak (from the GitHub repository
# Zelex/images, folder kodak/, commit 0b8a89db599a384124fb991b85d40cfd63c73d58; see shared/data/SOURCES.md).
# Another mirror that re-encoded the PNGs would hold the same pixels under other hashes and be refused.
KODAK_SHA256 = {
    "kodim01.png": "6b4fbe6f3e8e0e20150d5b0c32248bf072e22b5989d415f96f796c5b7004a70f",
    "kodim02.png": "1788370471429d992750a09caf6702ac74e56962447de02520d4b161738c0369",
    "kodim03.png": "b9c800ee568f0b18c983817df08d9f7f24a7ddb3abfdc31bde9234c4fde83137",
    "kodim04.png": "0c60c62599ad33fd78b29c36013fbe4120946f6c327c0ef0ec6983297fb48d23",
    "kodim05.png": "ccf694ceb6bbf431e0009ed0d5573a8ff0915095b69ddfb527b91d8325897f5e",
    "kodim06.png": "f4212cc927d1d579c712843cf8320c7eccb571e5ea80456022ffe99d67e9cd5d",
    "kodim07.png": "7cdd6d63ae0a245f6f9d983d740e11c6808c2efc24f8351aad9b5f676c27b55a",
    "kodim08.png": "5a6a089bdb47605287c00d89ebf2a5312981eb998c94b5853d917c93a9066cdb",
    "kodim09.png": "4d8d801592aeaf446978bbd1c83b76c498242d0f684769311a4e7248289500bf",
    "kodim10.png": "7aca487dc83db732a5690b7affe8558e9dadf5bb44a4589ba2b607480a07228b",
    "kodim11.png": "c7c02bd6e942d1181518e3ce2d97cf0451e4494a5e9d6ddee276940e4875d746",
    "kodim12.png": "df571f5e66d1aefd764ea77855e81e3be61528c34962a0fd1d50557502162c1e",
    "kodim13.png": "797949ce1152ef157ff0a1231c95cb8ed7641615e0b0f5f77f851a44aee19e8d",
    "kodim14.png": "08a1898d5702f32e7d9f94a94651d74a62cb9325475775a558b388c8d98f1846",
    "kodim15.png": "416c475f39b0eb9203ce7f77d2af8824f5bffc1a86a4605865017f04c41639b9",
    "kodim16.png": "5d03303693decdf7a1e1e930b5ca6684283aa80a9e7d8d6a842a74fa5f790640",
    "kodim17.png": "19d90e98e5835efae20a6e17e22e5ac6814ee2c8efb32d188ea4359abaf9f5bd",
    "kodim18.png": "83df267dfec61e9b9d3756c422502160b2fab595650c73a8b12940540ad09ec5",
    "kodim19.png": "86560efe85a13413b228ef7e42dde0d439b25a94fb8e2d6fb1dc1631cf48853b",
    "kodim20.png": "1ae187d92b3a4483b6717f7fd08592846ffdfc340c6424f6756627a27f3d8ea7",
    "kodim21.png": "26e193795108c4b5ec47206ae4ff07a353d2492947f7a7ae8d380e042b74027b",
    "kodim22.png": "627b76fccf714b4ddffb739b2eb63ba2817cf5b5a8e222079542dcf2cfdda939",
    "kodim23.png": "85c67d7ea758cb0604fb6980ab0c65091a2eefa7b3b50cbb1bc702a60206dfe5",
    "kodim24.png": "9f1c26df52217bd49f998a720a2ffeba41a535cf826f4ae32e355fb2b0bbc0fe",
}

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DOWNLOAD_TIMEOUT_S = 60.0  # per blocking socket operation (connect, each read), not for the whole file
CHUNK = 1 << 20
SPLITS = ("test", "train")


class DatasetError(DcompError):
    """A data set that cannot be found, fetched, verified or read."""


Note = Callable[[str], None]


def _print_note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)


# --- images ------------------------------------------------------------------------------------------------


class BenchImage:
    """One benchmark image: `name` and `array`, (H, W, C) uint8 with C in 1, 3, 4 (L, RGB, RGBA).

    Built either from an array (CIFAR rows, kept in memory: 3 KB each) or from a file path; a file is
    decoded each time `array` / `load()` is read and is not kept, so a list of Kodak-size images costs
    only their paths. Read `load()` once per use and keep the result while needed."""

    __slots__ = ("name", "path", "mode", "_array")

    def __init__(self, name: str, array: np.ndarray | None = None, *, path: Path | None = None,
                 mode: str | None = None):
        if (array is None) == (path is None):
            raise ValueError("BenchImage needs exactly one of array and path")
        if array is not None:
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (1, 3, 4):
                raise ValueError(f"expected an (H, W, C) uint8 array with C in 1/3/4, got {array.dtype} {array.shape}")
            mode = mode or {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[2]]
        self.name = name
        self.path = Path(path) if path is not None else None
        self.mode = mode or ""  # L, RGB or RGBA after conversion (known without decoding)
        self._array = array

    @property
    def array(self) -> np.ndarray:
        return self.load()

    def load(self) -> np.ndarray:
        if self._array is not None:
            return self._array
        from PIL import Image

        from dcomp.imageio import to_array

        try:
            with Image.open(self.path) as im:
                arr, _ = to_array(im)
        except (OSError, ValueError, DcompError) as exc:
            raise DatasetError(f"{self.path}: not a readable image ({exc})") from None
        return arr

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path is not None else f"shape={self._array.shape}"
        return f"BenchImage(name={self.name!r}, mode={self.mode!r}, {where})"


# --- cache and downloads -------------------------------------------------------------------------------------


def cache_dir(data_dir: Path | str | None = None) -> Path:
    """`data_dir` if given, else $DCOMP_DATA_DIR, else ~/.cache/dcomp (not created here)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("DCOMP_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "dcomp"


def _mkdir(folder: Path) -> list[Path]:
    """Create the cache folder; return the folders created (removed again if the download fails)."""
    try:
        return make_folder(folder)
    except OSError as exc:
        raise DatasetError(f"cannot create cache folder {folder}: {exc.strerror or exc}") from None


def _hasher(kind: str):
    return hashlib.md5(usedforsecurity=False) if kind == "md5" else hashlib.sha256()


def file_digest(path: Path, kind: str = "sha256") -> str:
    h = _hasher(kind)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _progress_bar(label: str, total: int | None):
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    console = Console(stderr=True)
    # Only on a terminal: elsewhere (a log file, a pipe) the bar would leave a stray line.
    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn(), console=console, disable=not console.is_terminal)
    return bar, bar.add_task(label, total=total)


def download(url: str, dest: Path | str, expected_md5: str | None = None, expected_sha256: str | None = None,
             progress: bool = True) -> Path:
    """Fetch `url` into `dest`, via `dest.part`, checking the byte count and the checksums given.

    On any failure the partial file and the folders created for it are removed, and DatasetError
    says why in one line; an existing `dest` is replaced only by a complete, checked file."""
    dest = Path(dest)
    created = _mkdir(dest.parent)
    part = dest.with_suffix(dest.suffix + ".part")
    checks = [(kind, want.lower(), _hasher(kind)) for kind, want in (("md5", expected_md5),
                                                                     ("sha256", expected_sha256)) if want]
    done = False
    bar = None
    try:
        try:
            response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            raise DatasetError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise DatasetError(f"download of {url} failed: {exc.reason}") from None
        except (OSError, ValueError) as exc:  # timeouts, resets during the handshake, malformed URLs
            raise DatasetError(f"download of {url} failed: {exc}") from None
        with response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else None
            if progress:
                bar, task = _progress_bar(dest.name, total)
                bar.start()
            received = 0
            try:
                out = open(part, "wb")
            except OSError as exc:
                raise DatasetError(f"cannot write {part}: {exc.strerror or exc}") from None
            with out:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except Exception as exc:  # IncompleteRead, ConnectionResetError, timeout, ...
                        got = f"{received} of {total}" if total is not None else f"{received}"
                        raise DatasetError(f"download of {url} failed after {got} bytes: "
                                           f"{type(exc).__name__}: {exc}") from None
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise DatasetError(f"cannot write {part}: {exc.strerror or exc}") from None
                    received += len(chunk)
                    for _, _, h in checks:
                        h.update(chunk)
                    if bar is not None:
                        bar.update(task, advance=len(chunk))
        if total is not None and received != total:
            raise DatasetError(f"download of {url} failed: connection closed after {received} of {total} bytes")
        for kind, want, h in checks:
            got = h.hexdigest()
            if got != want:
                raise DatasetError(f"checksum mismatch for {dest.name} downloaded from {url} "
                                   f"({kind} {got}, expected {want})")
        try:
            os.replace(part, dest)
        except OSError as exc:
            raise DatasetError(f"cannot move {part} to {dest}: {exc.strerror or exc}") from None
        done = True
        return dest
    finally:
        if bar is not None:
            bar.stop()
        if not done:
            try:
                part.unlink()
            except FileNotFoundError:
                pass
            except OSError:  # pragma: no cover - nothing better to do; the error being raised says more
                pass
            remove_empty(created)


# --- CIFAR-10 ------------------------------------------------------------------------------------------------

# The batches are pickles; only the globals a CIFAR batch needs are allowed, so a crafted file cannot run code.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        if module.startswith("numpy.core."):  # NumPy 2 moved numpy.core to numpy._core (old name warns)
            try:
                return super().find_class("numpy._core." + module[len("numpy.core."):], name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def _batch_names(split: str) -> list[str]:
    return ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]


def _decode_batch(f, where: str) -> np.ndarray:
    """A batch file object to (N, 32, 32, 3) uint8 (rows: R plane, G plane, B plane of 32x32)."""
    try:
        batch = _BatchUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # truncated or foreign pickles raise many kinds of errors
        raise DatasetError(f"{where}: not a CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{where}: not a CIFAR-10 batch (data should be N x 3072 uint8, got {shape})")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _cifar_images(batches: Iterable[tuple[str, Callable[[], np.ndarray]]], split: str,
                  limit: int | None) -> list[BenchImage]:
    images: list[BenchImage] = []
    for _, load in batches:
        if limit is not None and len(images) >= limit:
            break
        arr = load()
        take = len(arr) if limit is None else min(len(arr), limit - len(images))
        start = len(images)
        images.extend(BenchImage(f"cifar10-{split}-{start + i:05d}", arr[i]) for i in range(take))
    return images


def _load_cifar_folder(folder: Path, split: str, limit: int | None) -> list[BenchImage]:
    def loader(path: Path):
        def load():
            try:
                with open(path, "rb") as f:
                    return _decode_batch(f, str(path))
            except FileNotFoundError:
                raise DatasetError(f"{folder} has no {path.name} (not a complete CIFAR-10 python folder)") from None
            except OSError as exc:
                raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
        return load

    return _cifar_images(((n, loader(folder / n)) for n in _batch_names(split)), split, limit)


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{archive}: not a readable .tar.gz archive ({exc})") from None


def _load_cifar_archive(archive: Path, split: str, limit: int | None) -> list[BenchImage]:
    """Read the batches straight from a CIFAR-style archive, without extracting anything."""
    names = _batch_names(split)
    with _open_tar(archive) as tf:
        try:
            members = {}
            for m in tf.getmembers():
                base = PurePosixPath(m.name).name
                if m.isfile() and base in names and base not in members:
                    members[base] = m
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DatasetError(f"{archive}: damaged archive ({exc})") from None

        def loader(name: str):
            def load():
                if name not in members:
                    raise DatasetError(f"{archive} has no {name} (not a CIFAR-10 python archive)")
                try:
                    with tf.extractfile(members[name]) as f:
                        return _decode_batch(f, f"{archive}:{members[name].name}")
                except (tarfile.TarError, OSError, EOFError) as exc:
                    raise DatasetError(f"{archive}: damaged archive ({exc})") from None
            return load

        return _cifar_images(((n, loader(n)) for n in names), split, limit)


def _unsafe_member(m: tarfile.TarInfo) -> str | None:
    p = PurePosixPath(m.name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return f"unsafe path {m.name!r}"
    if not (m.isfile() or m.isdir()):
        return f"{m.name!r} is a link or special file"
    return None


def _extract_cifar(archive: Path, cache: Path) -> Path:
    """Extract cifar-10-batches-py/ from a checked archive into `cache`, all or nothing.

    Only regular files and folders with relative paths inside the archive are accepted (no absolute
    paths, no '..', no links or devices); the folder appears in the cache only once complete."""
    target = cache / CIFAR10_FOLDER
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache))
    try:
        with _open_tar(archive) as tf:
            try:
                for m in tf:
                    reason = _unsafe_member(m)
                    if reason:
                        raise DatasetError(f"refusing to extract {archive.name}: {reason}")
                    parts = PurePosixPath(m.name).parts
                    if parts[0] != CIFAR10_FOLDER or m.isdir():
                        continue
                    out = tmp.joinpath(*parts)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with tf.extractfile(m) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
            except (tarfile.TarError, EOFError) as exc:
                raise DatasetError(f"{archive}: damaged archive ({exc})") from None
            except OSError as exc:
                raise DatasetError(f"cannot extract {archive.name} into {cache}: {exc}") from None
        if not (tmp / CIFAR10_FOLDER).is_dir():
            raise DatasetError(f"{archive} has no {CIFAR10_FOLDER}/ folder (not a CIFAR-10 python archive)")
        try:
            os.replace(tmp / CIFAR10_FOLDER, target)
        except OSError as exc:
            raise DatasetError(f"cannot move the extracted folder to {target}: {exc.strerror or exc}") from None
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cifar_url() -> str:
    return os.environ.get("DCOMP_CIFAR10_URL") or CIFAR10_URL


def _offline_hint(exc: DatasetError, what: str, folder: Path) -> DatasetError:
    return DatasetError(f"{exc}; to work offline, put {what} in {folder}")


def _count_note(images: list[BenchImage], split: str, where: Path, limit: int | None, note: Note) -> None:
    official = CIFAR10_OFFICIAL_COUNTS[split]
    if limit is None and len(images) != official:
        note(f"{where} holds {len(images)} {split} images, not the {official} of the official CIFAR-10")


def _resolve_cifar10(cache: Path, split: str, limit: int | None, progress: bool,
                     note: Note) -> tuple[str, list[BenchImage]]:
    display = f"CIFAR-10 {split}"
    folder = cache / CIFAR10_FOLDER
    archive = cache / CIFAR10_ARCHIVE
    if folder.is_dir():
        images = _load_cifar_folder(folder, split, limit)
        _count_note(images, split, folder, limit, note)
        return display, images
    if archive.is_file():
        got = file_digest(archive, "md5")
        if got != CIFAR10_MD5:
            raise DatasetError(f"checksum mismatch for {archive} (md5 {got}, expected {CIFAR10_MD5}); "
                               "delete it to download it again")
    else:
        others = sorted(p for p in cache.glob("cifar-10*python*.tar.gz") if p.is_file() and p.name != CIFAR10_ARCHIVE)
        if others:
            local = others[0]
            note(f"using the local copy {local} (not the official {CIFAR10_ARCHIVE}, so its MD5 "
                 "is not checked against the official one)")
            return f"{display} ({local.name})", _load_cifar_archive(local, split, limit)
        try:
            download(_cifar_url(), archive, expected_md5=CIFAR10_MD5, progress=progress)
        except DatasetError as exc:
            raise _offline_hint(exc, f"{CIFAR10_ARCHIVE} (or its extracted {CIFAR10_FOLDER}/)", cache) from None
    folder = _extract_cifar(archive, cache)
    images = _load_cifar_folder(folder, split, limit)
    _count_note(images, split, folder, limit, note)
    return display, images


# --- Kodak ---------------------------------------------------------------------------------------------------


def _kodak_base_url() -> str:
    base = os.environ.get("DCOMP_KODAK_URL") or KODAK_BASE_URL
    return base if base.endswith("/") else base + "/"


def _resolve_kodak(cache: Path, limit: int | None, progress: bool, note: Note) -> tuple[str, list[BenchImage]]:
    folder = cache / "kodak"
    names = sorted(KODAK_SHA256)[:limit]
    base = _kodak_base_url()
    for name in names:
        path = folder / name
        want = KODAK_SHA256[name].lower()
        if path.is_file():
            if file_digest(path, "sha256") == want:
                continue
            note(f"{path} does not have the expected SHA-256; downloading it again")
        try:
            download(base + name, path, expected_sha256=want, progress=progress)
        except DatasetError as exc:
            raise _offline_hint(exc, "the Kodak PNGs (kodim01.png .. kodim24.png)", folder) from None
    return "Kodak", [BenchImage(Path(n).stem, path=folder / n, mode="RGB") for n in names]


# --- local paths ---------------------------------------------------------------------------------------------


def _converted_mode(im) -> str | None:
    """The mode dcomp's to_array gives this image (from its header alone), or None if refused."""
    mode = im.mode
    if mode == "P":
        return "RGBA" if "transparency" in im.info else "RGB"
    if mode == "LA":
        return "RGBA"
    if mode == "1":
        return "L"
    return mode if mode in ("L", "RGB", "RGBA") else None


def _image_entry(path: Path, note: Note) -> BenchImage | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = _converted_mode(im)
            orig = im.mode
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        note(f"skipping {path.name}: not a readable image ({exc})")
        return None
    if mode is None:
        note(f"skipping {path.name}: image mode {orig} is not supported (8-bit L, RGB, RGBA and palette are)")
        return None
    return BenchImage(path.name, path=path, mode=mode)


def _is_cifar_folder(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("test_batch", "data_batch_1", "batches.meta"))


def _resolve_path(spec: str, split: str, limit: int | None, note: Note) -> tuple[str, list[BenchImage]]:
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {spec!r} not found: not cifar10, kodak, or an existing folder or archive")
    if path.is_file():
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return f"CIFAR-10 {split} ({path.name})", _load_cifar_archive(path, split, limit)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            entry = _image_entry(path, note)
            if entry is None:
                raise DatasetError(f"{path} is not an image dcomp can read")
            return path.name, [entry]
        raise DatasetError(f"{path} is neither a folder of images, an image, nor a CIFAR-10 .tar.gz archive")
    if path.is_dir() and not _is_cifar_folder(path) and _is_cifar_folder(path / CIFAR10_FOLDER):
        path = path / CIFAR10_FOLDER
    if _is_cifar_folder(path):
        return f"CIFAR-10 {split} ({path})", _load_cifar_folder(path, split, limit)
    try:
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as exc:
        raise DatasetError(f"cannot list {path}: {exc.strerror or exc}") from None
    images: list[BenchImage] = []
    for p in files:
        if limit is not None and len(images) >= limit:
            break
        entry = _image_entry(p, note)
        if entry is not None:
            images.append(entry)
    if not images:
        what = "no readable 8-bit images" if files else f"no images ({', '.join(IMAGE_SUFFIXES)})"
        raise DatasetError(f"{path} holds {what}")
    return path.resolve().name or str(path), images


# --- entry point ---------------------------------------------------------------------------------------------


def resolve_dataset(spec: str, data_dir: Path | None = None, split: str = "test", limit: int | None = None,
                    progress: bool = True, on_note: Note | None = None) -> tuple[str, list[BenchImage]]:
    """A display name and the images of `spec`, in a stable order.

    spec: "cifar10" (split "test" = test_batch, "train" = data_batch_1..5), "kodak" (kodim01..24),
    or a path: a folder of images (sorted by name), an extracted cifar-10-batches-py/ folder, or a
    CIFAR-style .tar.gz archive. `limit` keeps the first N images. Notes (a local copy used, images
    skipped, ...) go to `on_note`, or to stderr as "note: ..." lines when it is None."""
    note = on_note or _print_note
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (expected test or train)")
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be at least 1 (got {limit})")
    if spec == "cifar10":
        return _resolve_cifar10(cache_dir(data_dir), split, limit, progress, note)
    if spec == "kodak":
        return _resolve_kodak(cache_dir(data_dir), limit, progress, note)
    return _resolve_path(spec, split, limit, note)
