"""dcomp.datasets, offline: a tiny CIFAR-10 archive in the official layout and two small PNGs,
served by an HTTP server on 127.0.0.1 that the tests start and stop themselves."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcomp import datasets
from dcomp.datasets import BenchImage, DatasetError, download, resolve_dataset
from dcomp.errors import DcompError

N_TEST, N_TRAIN = 4, 3  # images per batch in the tiny archive


# --- a tiny CIFAR-10 in the official layout ---------------------------------------------------------------


def _rows(n: int, seed: int) -> np.ndarray:
    """n rows of 3072 bytes: R plane, G plane, B plane; the planes differ so a channel mix-up shows."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    rows[:, 0] = 10   # pixel (0, 0): R=10, G=20, B=30
    rows[:, 1024] = 20
    rows[:, 2048] = 30
    return rows


def _write_batches(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    batches = {"test_batch": _rows(N_TEST, 0)}
    batches.update({f"data_batch_{i}": _rows(N_TRAIN, i) for i in range(1, 6)})
    meta = {b"num_cases_per_batch": 10000, b"label_names": [b"airplane", b"automobile"], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    for name, rows in batches.items():
        d = {b"batch_label": name.encode(), b"labels": [i % 10 for i in range(len(rows))], b"data": rows,
             b"filenames": [f"{name}_{i:05d}.png".encode() for i in range(len(rows))]}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
    return batches


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """(archive bytes, its md5, rows per batch, extracted folder)."""
    root = tmp_path_factory.mktemp("cifar-src")
    batches = _write_batches(root / "cifar-10-batches-py")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    data = buf.getvalue()
    return data, hashlib.md5(data).hexdigest(), batches, root / "cifar-10-batches-py"


def _expected(rows: np.ndarray) -> np.ndarray:
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


# --- a local HTTP server ------------------------------------------------------------------------------------


class _Server:
    def __init__(self):
        self.routes: dict[str, tuple[str, bytes]] = {}  # path -> ("ok" | "short", body)
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits.append(self.path)
                kind, body = server.routes.get(self.path, ("missing", b""))
                if kind == "missing":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) + (5000 if kind == "short" else 0)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True  # "short": the promised bytes never come

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    s = _Server()
    yield s
    s.stop()


@pytest.fixture
def official(monkeypatch, server, cifar):
    """The tiny archive served as the 'official' one (MD5 constant patched to its MD5)."""
    data, md5, _, _ = cifar
    server.routes["/cifar-10-python.tar.gz"] = ("ok", data)
    monkeypatch.setattr(datasets, "CIFAR10_MD5", md5)
    monkeypatch.setenv("DCOMP_CIFAR10_URL", server.base + "/cifar-10-python.tar.gz")
    return server


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# --- CIFAR-10 -----------------------------------------------------------------------------------------------


def test_dataset_error_is_a_dcomp_error():
    assert issubclass(DatasetError, DcompError)


def test_cifar10_download_extract_decode_then_offline(official, cifar, tmp_path):
    _, _, batches, _ = cifar
    cache = tmp_path / "cache"
    notes: list[str] = []
    name, images = resolve_dataset("cifar10", data_dir=cache, progress=False, on_note=notes.append)
    assert name == "CIFAR-10 test"
    assert official.hits == ["/cifar-10-python.tar.gz"]
    assert [im.name for im in images] == [f"cifar10-test-{i:05d}" for i in range(N_TEST)]
    want = _expected(batches["test_batch"])
    for im, w in zip(images, want):
        assert im.array.shape == (32, 32, 3) and im.array.dtype == np.uint8 and im.mode == "RGB"
        np.testing.assert_array_equal(im.array, w)
        assert tuple(im.array[0, 0]) == (10, 20, 30)  # R, G, B planes in that order
    assert any("not the 10000" in n for n in notes)  # the tiny archive is not the official size
    assert {"cifar-10-python.tar.gz", "cifar-10-batches-py"} <= set(_files(cache))
    assert not [f for f in _files(cache) if f.endswith(".part") or ".extract-" in f]

    # train split: data_batch_1..5 in order, names continue across batches; limit cuts across batches
    _, train = resolve_dataset("cifar10", data_dir=cache, split="train", limit=N_TRAIN + 1, progress=False,
                               on_note=notes.append)
    assert [im.name for im in train] == [f"cifar10-train-{i:05d}" for i in range(N_TRAIN + 1)]
    np.testing.assert_array_equal(train[N_TRAIN].array, _expected(batches["data_batch_2"])[0])

    official.stop()  # offline from here on
    _, again = resolve_dataset("cifar10", data_dir=cache, progress=False, on_note=notes.append)
    np.testing.assert_array_equal(np.stack([im.array for im in again]), want)
    # without the extracted folder, the cached archive is checked and extracted again, still offline
    import shutil

    shutil.rmtree(cache / "cifar-10-batches-py")
    _, again = resolve_dataset("cifar10", data_dir=cache, progress=False, on_note=notes.append)
    np.testing.assert_array_equal(np.stack([im.array for im in again]), want)
    assert official.hits == ["/cifar-10-python.tar.gz"]


def test_cifar10_cache_from_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("DCOMP_DATA_DIR", str(tmp_path / "env"))
    assert datasets.cache_dir() == tmp_path / "env"
    assert datasets.cache_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("DCOMP_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.cache_dir() == tmp_path / "home" / ".cache" / "dcomp"


def test_cifar10_download_checksum_mismatch_leaves_nothing(official, monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "CIFAR10_MD5", "0" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"checksum mismatch for cifar-10-python\.tar\.gz") as err:
        resolve_dataset("cifar10", data_dir=cache, progress=False, on_note=lambda m: None)
    assert "\n" not in str(err.value)
    assert _files(cache) == []


def test_cifar10_cached_archive_with_wrong_md5_is_refused(official, cifar, monkeypatch, tmp_path):
    data, _, _, _ = cifar
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cifar-10-python.tar.gz").write_bytes(data)
    monkeypatch.setattr(datasets, "CIFAR10_MD5", "0" * 32)
    with pytest.raises(DatasetError, match=r"checksum mismatch for .*cifar-10-python\.tar\.gz"):
        resolve_dataset("cifar10", data_dir=cache, progress=False, on_note=lambda m: None)
    assert _files(cache) == ["cifar-10-python.tar.gz"]  # not extracted, not downloaded over
    assert official.hits == []


def test_interrupted_download_leaves_no_partial_file(official, cifar, tmp_path):
    data, _, _, _ = cifar
    official.routes["/cifar-10-python.tar.gz"] = ("short", data)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=rf"connection closed after {len(data)} of {len(data) + 5000} bytes"):
        resolve_dataset("cifar10", data_dir=cache, progress=False, on_note=lambda m: None)
    assert _files(cache) == []


def test_http_404_and_connection_refused(server, monkeypatch, tmp_path):
    monkeypatch.setenv("DCOMP_CIFAR10_URL", server.base + "/nothing-here.tar.gz")
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"download of http://127\.0\.0\.1:\d+/nothing-here\.tar\.gz failed: "
                                           r"HTTP 404.*to work offline"):
        resolve_dataset("cifar10", data_dir=cache, progress=False)
    assert _files(cache) == []
    server.stop()
    with pytest.raises(DatasetError, match="failed: .*refused"):
        download(server.base + "/x.bin", tmp_path / "x.bin", progress=False)
    assert not (tmp_path / "x.bin").exists() and not (tmp_path / "x.bin.part").exists()


def test_download_with_progress_bar_and_sha256(server, tmp_path, capsys):
    body = bytes(range(256)) * 40
    server.routes["/f.bin"] = ("ok", body)
    dest = download(server.base + "/f.bin", tmp_path / "sub" / "f.bin",
                    expected_sha256=hashlib.sha256(body).hexdigest(), progress=True)
    assert dest.read_bytes() == body
    assert capsys.readouterr().out == ""  # the bar goes to stderr, never stdout


def test_local_subset_archive_is_used_without_download(server, cifar, monkeypatch, tmp_path):
    data, _, batches, _ = cifar
    monkeypatch.setenv("DCOMP_CIFAR10_URL", server.base + "/cifar-10-python.tar.gz")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cifar-10-subset-python.tar.gz").write_bytes(data)
    notes: list[str] = []
    name, images = resolve_dataset("cifar10", data_dir=cache, split="train", progress=False, on_note=notes.append)
    assert server.hits == []
    assert "cifar-10-subset-python.tar.gz" in name
    assert len(notes) == 1 and "local copy" in notes[0] and "MD5" in notes[0]
    assert len(images) == 5 * N_TRAIN
    np.testing.assert_array_equal(images[-1].array, _expected(batches["data_batch_5"])[-1])
    assert _files(cache) == ["cifar-10-subset-python.tar.gz"]  # read in place, nothing extracted


def test_unsafe_archive_is_not_extracted(official, monkeypatch, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-py/../../escaped.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))
    data = buf.getvalue()
    official.routes["/cifar-10-python.tar.gz"] = ("ok", data)
    monkeypatch.setattr(datasets, "CIFAR10_MD5", hashlib.md5(data).hexdigest())
    cache = tmp_path / "a" / "cache"
    with pytest.raises(DatasetError, match="refusing to extract cifar-10-python.tar.gz: unsafe path"):
        resolve_dataset("cifar10", data_dir=cache, progress=False)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "a" / "escaped.txt").exists()
    assert _files(cache) == ["cifar-10-python.tar.gz"]


def test_pickle_with_foreign_globals_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Path("x")}, protocol=2))
    with pytest.raises(DatasetError, match="not a CIFAR-10 batch .*unexpected object"):
        resolve_dataset(str(folder), progress=False)


# --- local paths ---------------------------------------------------------------------------------------------


def test_path_extracted_cifar_folder_and_archive(cifar, tmp_path):
    data, _, batches, folder = cifar
    name, images = resolve_dataset(str(folder), progress=False)
    assert "CIFAR-10 test" in name
    np.testing.assert_array_equal(np.stack([im.array for im in images]), _expected(batches["test_batch"]))
    # the parent folder of cifar-10-batches-py works too
    _, images = resolve_dataset(str(folder.parent), split="train", limit=2, progress=False)
    assert [im.name for im in images] == ["cifar10-train-00000", "cifar10-train-00001"]
    archive = tmp_path / "mine.tar.gz"
    archive.write_bytes(data)
    _, images = resolve_dataset(str(archive), split="train", progress=False)
    np.testing.assert_array_equal(np.stack([im.array for im in images]),
                                  np.concatenate([_expected(batches[f"data_batch_{i}"]) for i in range(1, 6)]))


def test_path_folder_of_images_modes(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    gray = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "a_gray.png")
    Image.fromarray(rgb, "RGB").save(tmp_path / "b_rgb.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c_rgba.png")
    pal = Image.fromarray(rgb, "RGB").quantize(8)
    pal.save(tmp_path / "d_pal.png")
    Image.fromarray(gray, "L").convert("LA").save(tmp_path / "e_la.png")
    Image.fromarray((gray > 127).astype(np.uint8) * 255, "L").convert("1").save(tmp_path / "f_bilevel.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g_16bit.png")
    (tmp_path / "h_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "notes.txt").write_text("ignored")
    notes: list[str] = []
    name, images = resolve_dataset(str(tmp_path), progress=False, on_note=notes.append)
    assert name == tmp_path.name
    by = {im.name: im for im in images}
    assert list(by) == ["a_gray.png", "b_rgb.png", "c_rgba.png", "d_pal.png", "e_la.png", "f_bilevel.png"]
    assert {n: (im.mode, im.array.shape) for n, im in by.items()} == {
        "a_gray.png": ("L", (6, 5, 1)), "b_rgb.png": ("RGB", (6, 5, 3)), "c_rgba.png": ("RGBA", (6, 5, 4)),
        "d_pal.png": ("RGB", (6, 5, 3)), "e_la.png": ("RGBA", (6, 5, 4)), "f_bilevel.png": ("L", (6, 5, 1))}
    np.testing.assert_array_equal(by["a_gray.png"].array[:, :, 0], gray)
    np.testing.assert_array_equal(by["b_rgb.png"].array, rgb)
    np.testing.assert_array_equal(by["c_rgba.png"].array, rgba)
    np.testing.assert_array_equal(by["d_pal.png"].array, np.asarray(pal.convert("RGB")))
    assert len(notes) == 2 and "g_16bit.png" in notes[0] and "h_broken.png" in notes[1]
    _, two = resolve_dataset(str(tmp_path), limit=2, progress=False, on_note=notes.append)
    assert [im.name for im in two] == ["a_gray.png", "b_rgb.png"]


def test_path_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found") as err:
        resolve_dataset(str(tmp_path / "nope"), progress=False)
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        resolve_dataset(str(tmp_path / "empty"), progress=False)
    with pytest.raises(DatasetError, match="unknown split"):
        resolve_dataset(str(tmp_path / "empty"), split="val", progress=False)


def test_bench_image_from_array():
    im = BenchImage("x", np.zeros((2, 3, 4), np.uint8))
    assert im.mode == "RGBA" and im.load().shape == (2, 3, 4)
    with pytest.raises(ValueError):
        BenchImage("y")


# --- Kodak ---------------------------------------------------------------------------------------------------


@pytest.fixture
def kodak(server, monkeypatch):
    rng = np.random.default_rng(7)
    files = {}
    for name in ("kodim01.png", "kodim02.png"):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8), "RGB").save(buf, "PNG")
        files[name] = buf.getvalue()
        server.routes[f"/kodak/{name}"] = ("ok", files[name])
    monkeypatch.setattr(datasets, "KODAK_SHA256", {n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
    monkeypatch.setenv("DCOMP_KODAK_URL", server.base + "/kodak")  # no trailing slash: added
    return files


def test_kodak_download_then_offline(server, kodak, tmp_path):
    cache = tmp_path / "cache"
    name, images = resolve_dataset("kodak", data_dir=cache, progress=False)
    assert name == "Kodak" and [im.name for im in images] == ["kodim01", "kodim02"]
    for im in images:
        np.testing.assert_array_equal(im.array, np.asarray(Image.open(io.BytesIO(kodak[im.name + ".png"]))))
    assert _files(cache) == ["kodak", "kodak/kodim01.png", "kodak/kodim02.png"]
    server.stop()
    _, again = resolve_dataset("kodak", data_dir=cache, progress=False)
    assert [im.array.shape for im in again] == [(8, 12, 3)] * 2
    assert len(server.hits) == 2


def test_kodak_hash_mismatch_and_damaged_cache(server, kodak, monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    server.routes["/kodak/kodim02.png"] = ("ok", kodak["kodim01.png"])  # wrong file served
    with pytest.raises(DatasetError, match=r"checksum mismatch for kodim02\.png .*sha256"):
        resolve_dataset("kodak", data_dir=cache, progress=False)
    assert _files(cache) == ["kodak", "kodak/kodim01.png"]  # kodim01 was fine; no kodim02, no .part
    # a damaged cached file is noticed and fetched again
    server.routes["/kodak/kodim02.png"] = ("ok", kodak["kodim02.png"])
    (cache / "kodak" / "kodim01.png").write_bytes(b"damaged")
    notes: list[str] = []
    _, images = resolve_dataset("kodak", data_dir=cache, progress=False, on_note=notes.append)
    assert (cache / "kodak" / "kodim01.png").read_bytes() == kodak["kodim01.png"]
    assert len(notes) == 1 and "kodim01.png" in notes[0]
    assert len(images) == 2
