"""Tests of poisoncert.data: formats on tiny generated files, then the real shared data sets.

Tiny IDX, CIFAR-binary and .npz files are written to ``tmp_path`` at test time (nothing is
committed). Every test runs isolated from the real data places (``$POISONCERT_DATA``, the user
cache, ``shared/data`` above the package) unless it asks for them; the real-data tests at the
end use ``../shared/data`` beside the repository and skip only when it is absent.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import shutil
import sys
import tarfile
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from poisoncert.data import (
    ChecksumError,
    DataError,
    DataFormatError,
    Dataset,
    DatasetNotFoundError,
    DownloadError,
    SourceFile,
    list_datasets,
    load_dataset,
    loaders,
    parse_idx,
    paths,
    read_idx,
    registry,
    search_roots,
)
from poisoncert.data import download as download_mod
from poisoncert.data.checksums import read_file

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# ----------------------------------------------------------------------------- fixture builders

def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """IDX encoding of ``arr``: magic 0x0000{code}{ndim}, big-endian dims, big-endian data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in arr.shape)
    return header + np.asarray(arr, dtype=dtype).tobytes()


def tiny_idx_arrays(n_train: int = 30, n_test: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }


def write_idx_set(folder: Path, arrays=None, *, gz: bool = True, **kw) -> dict:
    """Write the four MNIST-named IDX files (gzipped or plain) into ``folder``."""
    arrays = tiny_idx_arrays(**kw) if arrays is None else arrays
    folder.mkdir(parents=True, exist_ok=True)
    for role, name in IDX_NAMES.items():
        data = idx_bytes(arrays[role])
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name).write_bytes(data)
    return arrays


CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")


def tiny_cifar_batches(per_batch: int = 4, n_test: int = 6, seed: int = 1) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        n = n_test if name == "test_batch.bin" else per_batch
        rec = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
        rec[:, 0] = (np.arange(n) + i) % 10
        out[name] = rec.tobytes()
    out["batches.meta.txt"] = ("\n".join(CIFAR_NAMES) + "\n\n").encode()
    return out


def write_cifar_tar(path: Path, members: dict[str, bytes], *, skip=()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            if name in skip:
                continue
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def write_cifar_folder(folder: Path, members: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        (folder / name).write_bytes(data)
    return folder


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real data place is visible: a fresh cwd, cache and package dir; no env var."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(paths, "_PACKAGE_DIR", tmp_path / "site" / "poisoncert" / "data")
    # a shared/data above pytest's folder (/tmp/shared/data, /shared/data) is not searched
    monkeypatch.setattr(paths, "_WALK_CEILING", tmp_path)
    return tmp_path


def trust_tiny_idx(monkeypatch, folder: Path):
    """Make the registry accept the tiny IDX files in ``folder`` by their content digests."""
    for role, name in IDX_NAMES.items():
        path = folder / f"{name}.gz"
        content = gzip.decompress(path.read_bytes()) if path.exists() else (folder / name
                                                                            ).read_bytes()
        known = dataclasses.replace(registry.MNIST_FILES[role], sha256={}, md5={},
                                    content_sha256={sha256(content): "test fixture"})
        monkeypatch.setitem(registry.MNIST_FILES, role, known)


# ------------------------------------------------------------------------------------ IDX format

@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                        (0x0C, np.int32), (0x0D, np.float32),
                                        (0x0E, np.float64)])
def test_parse_idx_round_trips_every_idx_type(code, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if code == 0x08:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = parse_idx(idx_bytes(arr, code))
    assert out.shape == (2, 3, 4)
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_gzipped_and_plain(tmp_path, gz):
    arr = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28).astype(np.uint8)
    data = idx_bytes(arr)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    np.testing.assert_array_equal(read_idx(path, magic=0x00000803), arr)
    raw = read_file(path)
    assert raw.gzipped is gz and bytes(raw.data) == data
    assert raw.sha256 == sha256(path.read_bytes())
    assert raw.content_sha256() == sha256(data)


def test_read_file_handles_multi_member_gzip(tmp_path):
    data = idx_bytes(np.arange(100, dtype=np.uint8))
    path = tmp_path / "multi.gz"
    path.write_bytes(gzip.compress(data[:50]) + gzip.compress(data[50:]))
    assert bytes(read_file(path).data) == data


@pytest.mark.parametrize("data,match", [
    (b"\x00\x00", "fewer than the 4"),
    (b"\x12\x34\x08\x03" + b"\x00" * 20, "bad magic number 0x12340803"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "bad magic number 0x00000701"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header declares 3 dimensions"),
    (idx_bytes(np.zeros((3, 4, 4), np.uint8))[:-5], "truncated: the header declares 3 x 4 x 4"),
    (idx_bytes(np.zeros(5, np.uint8)) + b"\x00", "longer than its header declares"),
])
def test_parse_idx_rejects_bad_files(data, match):
    with pytest.raises(DataFormatError, match=match):
        parse_idx(data, name="f.idx")


def test_parse_idx_checks_the_expected_magic():
    labels = idx_bytes(np.zeros(4, np.uint8))
    with pytest.raises(DataFormatError, match="magic number 0x00000801; expected 0x00000803"):
        parse_idx(labels, name="train-images", magic=0x00000803)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))[:-30])
    with pytest.raises(DataFormatError, match=r"t\.gz is truncated: its gzip stream ends early"):
        read_file(path)


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    good = bytearray(gzip.compress(np.arange(5000, dtype=np.uint16).tobytes()))
    good[20:40] = b"\xff" * 20
    path = tmp_path / "c.gz"
    path.write_bytes(bytes(good))
    with pytest.raises(DataFormatError, match="corrupt|truncated"):
        read_file(path)


# ------------------------------------------------------------------------- IDX data sets, layouts

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("sub", ["mnist", "MNIST/raw", ""])
def test_mnist_from_tiny_files_in_any_layout(tmp_path, gz, sub):
    root = tmp_path / "root"
    arrays = write_idx_set(root / sub if sub else root, gz=gz)
    ds = load_dataset("mnist", data_dir=root, verify=False)
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train[:, 0], arrays["train_images"] / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.classes == tuple(range(10)) and ds.n_classes == 10
    assert ds.input_shape == (1, 28, 28)
    assert [Path(s.path).name.split(".")[0] for s in ds.source] == list(IDX_NAMES.values())
    assert all(s.verified == "not verified" for s in ds.source)


def test_plain_files_preferred_over_gz_in_the_same_folder(tmp_path):
    folder = tmp_path / "root" / "mnist"
    write_idx_set(folder, gz=True, seed=1)
    plain = write_idx_set(folder, gz=False, seed=2)
    ds = load_dataset("mnist", data_dir=tmp_path / "root", verify=False)
    np.testing.assert_array_equal(ds.x_train[:, 0], plain["train_images"] / np.float32(255))


def test_image_and_label_counts_must_agree(tmp_path):
    arrays = tiny_idx_arrays()
    arrays["train_labels"] = arrays["train_labels"][:-1]
    write_idx_set(tmp_path / "d", arrays)
    with pytest.raises(DataFormatError, match="30 images but .* 29 labels"):
        load_dataset("mnist", data_dir=tmp_path / "d", verify=False)


def test_swapped_idx_files_are_caught(tmp_path):
    write_idx_set(tmp_path / "d")
    d = tmp_path / "d"
    a, b = d / "train-images-idx3-ubyte.gz", d / "train-labels-idx1-ubyte.gz"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with pytest.raises(DataFormatError, match="expected 0x00000803"):
        load_dataset("mnist", data_dir=d, verify=False)


# --------------------------------------------------------------------------- checksum verification

def test_checksum_mismatch_names_file_expected_and_actual(tmp_path):
    write_idx_set(tmp_path / "d" / "mnist")
    with pytest.raises(ChecksumError) as info:
        load_dataset("mnist", data_dir=tmp_path / "d")
    msg = str(info.value)
    first = tmp_path / "d" / "mnist" / "train-images-idx3-ubyte.gz"
    assert str(first) in msg
    assert "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609" in msg  # official
    assert "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db" in msg  # content
    assert sha256(first.read_bytes()) in msg  # actual
    assert "verify=False" in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, DataError)


def test_recompressed_and_plain_copies_verify_by_content(tmp_path, monkeypatch):
    folder = tmp_path / "d" / "mnist"
    write_idx_set(folder, gz=True)
    trust_tiny_idx(monkeypatch, folder)
    ds = load_dataset("mnist", data_dir=tmp_path / "d")
    assert all(s.verified == "sha256 of content: test fixture" for s in ds.source)
    # The same content recompressed differently (level 1) is still accepted.
    for name in IDX_NAMES.values():
        p = folder / f"{name}.gz"
        p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()), compresslevel=1))
    assert load_dataset("mnist", data_dir=tmp_path / "d").source[0].verified.startswith(
        "sha256 of content")


def test_file_digest_and_md5_are_accepted(tmp_path, monkeypatch):
    folder = tmp_path / "d"
    write_idx_set(folder)
    for i, (role, name) in enumerate(IDX_NAMES.items()):
        data = (folder / f"{name}.gz").read_bytes()
        known = registry.MNIST_FILES[role]
        if i % 2:
            known = dataclasses.replace(known, sha256={sha256(data): "fixture file"})
        else:
            known = dataclasses.replace(known, md5={hashlib.md5(data).hexdigest(): "fixture"})
        monkeypatch.setitem(registry.MNIST_FILES, role, known)
    got = [s.verified for s in load_dataset("mnist", data_dir=folder).source]
    assert got == ["md5: fixture", "sha256: fixture file", "md5: fixture",
                   "sha256: fixture file"]


def test_a_file_of_another_data_set_is_named_in_the_error():
    assert registry.identify_digest(
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
    ) == "Fashion-MNIST train-images-idx3-ubyte (official)"
    assert registry.identify_digest("0" * 64) is None


# ----------------------------------------------------------------------------------- CIFAR-10

def _expected_cifar(members):
    def split(names):
        rec = np.concatenate([np.frombuffer(members[n], np.uint8).reshape(-1, 3073)
                              for n in names])
        return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0]
    return (split([f"data_batch_{k}.bin" for k in range(1, 6)]), split(["test_batch.bin"]))


@pytest.mark.parametrize("layout", ["tar", "folder", "flat-folder"])
def test_cifar_from_tiny_archive_and_folders(tmp_path, layout):
    members = tiny_cifar_batches()
    root = tmp_path / "root"
    if layout == "tar":
        write_cifar_tar(root / "cifar10" / "cifar-10-binary.tar.gz", members)
    elif layout == "folder":
        write_cifar_folder(root / "cifar10" / "cifar-10-batches-bin", members)
    else:
        write_cifar_folder(root, members)
    ds = load_dataset("cifar10", data_dir=root, verify=False)
    (xtr, ytr), (xte, yte) = _expected_cifar(members)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(ds.x_train, xtr / np.float32(255))
    np.testing.assert_array_equal(ds.y_train, ytr)
    np.testing.assert_array_equal(ds.x_test, xte / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, yte)
    # CHW: record byte 1 + c*1024 + h*32 + w is pixel (c, h, w).
    rec = np.frombuffer(members["data_batch_1.bin"], np.uint8).reshape(-1, 3073)
    assert ds.x_train[2, 1, 3, 5] == np.float32(rec[2, 1 + 1024 + 3 * 32 + 5]) / np.float32(255)
    assert ds.class_names == CIFAR_NAMES
    assert ds.source[0].sha256 == sha256(Path(ds.source[0].path).read_bytes())


def test_cifar_extracted_folder_is_preferred_to_the_archive(tmp_path):
    root = tmp_path / "root" / "cifar10"
    write_cifar_tar(root / "cifar-10-binary.tar.gz", tiny_cifar_batches(seed=1))
    write_cifar_folder(root / "cifar-10-batches-bin", tiny_cifar_batches(seed=2))
    ds = load_dataset("cifar10", data_dir=tmp_path / "root", verify=False)
    assert len(ds.source) == 6 and ds.source[0].path.endswith("data_batch_1.bin")


def test_cifar_truncated_batch(tmp_path):
    members = tiny_cifar_batches()
    members["data_batch_3.bin"] = members["data_batch_3.bin"][:-100]
    write_cifar_folder(tmp_path / "c", members)
    with pytest.raises(DataFormatError, match=r"data_batch_3\.bin is truncated"):
        load_dataset("cifar10", data_dir=tmp_path / "c", verify=False)


def test_cifar_archive_missing_member(tmp_path):
    write_cifar_tar(tmp_path / "c" / "cifar-10-binary.tar.gz", tiny_cifar_batches(),
                    skip={"test_batch.bin"})
    with pytest.raises(DataFormatError, match=r"lacks the member\(s\) test_batch\.bin"):
        load_dataset("cifar10", data_dir=tmp_path / "c", verify=False)


def test_cifar_truncated_archive(tmp_path):
    path = write_cifar_tar(tmp_path / "c" / "cifar-10-binary.tar.gz", tiny_cifar_batches())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataFormatError, match="truncated"):
        load_dataset("cifar10", data_dir=tmp_path / "c", verify=False)


def test_cifar_bad_label_byte(tmp_path):
    members = tiny_cifar_batches()
    rec = np.frombuffer(members["test_batch.bin"], np.uint8).reshape(-1, 3073).copy()
    rec[1, 0] = 12
    members["test_batch.bin"] = rec.tobytes()
    write_cifar_folder(tmp_path / "c", members)
    with pytest.raises(DataFormatError, match="record 1 has label 12"):
        load_dataset("cifar10", data_dir=tmp_path / "c", verify=False)


def test_cifar_checksum_mismatch_and_member_verification(tmp_path, monkeypatch):
    members = tiny_cifar_batches()
    path = write_cifar_tar(tmp_path / "c" / "cifar-10-binary.tar.gz", members)
    with pytest.raises(ChecksumError) as info:
        load_dataset("cifar10", data_dir=tmp_path / "c")
    msg = str(info.value)
    assert str(path) in msg and sha256(path.read_bytes()) in msg
    assert "b823485d6250a31d53d79f549beb836f1e50b477bcb10b2403bfa63fe1152f41" in msg
    assert "c32a1d4ab5d03f1284b67883e8d87530" in msg  # official MD5
    # A repacked archive whose every batch has a known digest is accepted.
    for key, known in list(registry.CIFAR10_FILES.items()):
        if known.name in members:
            monkeypatch.setitem(registry.CIFAR10_FILES, key, dataclasses.replace(
                known, sha256={sha256(members[known.name]): "fixture"}))
    ds = load_dataset("cifar10", data_dir=tmp_path / "c")
    assert ds.source[0].verified == "sha256 of each batch: fixture"


def test_cifar_folder_checksum_error_points_to_the_archive(tmp_path):
    write_cifar_folder(tmp_path / "c" / "cifar-10-batches-bin", tiny_cifar_batches())
    with pytest.raises(ChecksumError, match=r"data_batch_1\.bin.*put cifar-10-binary\.tar\.gz"):
        load_dataset("cifar10", data_dir=tmp_path / "c")


# ----------------------------------------------------------------------- classes and relabelling

def test_class_subset_relabels_in_the_order_given(tmp_path):
    arrays = write_idx_set(tmp_path / "d", n_train=40, n_test=30)
    for classes in [(1, 7), (7, 1), (0, 3, 9)]:
        ds = load_dataset("mnist", data_dir=tmp_path / "d", classes=classes, verify=False)
        assert ds.classes == classes and ds.n_classes == len(classes)
        assert ds.class_names == tuple(str(c) for c in classes)
        y = arrays["train_labels"]
        keep = np.isin(y, classes)
        np.testing.assert_array_equal(np.asarray(classes)[ds.y_train], y[keep])
        np.testing.assert_array_equal(ds.x_train[:, 0],
                                      arrays["train_images"][keep] / np.float32(255))
        assert set(ds.y_test.tolist()) <= set(range(len(classes)))


def test_mnist17_is_mnist_restricted_to_1_and_7(tmp_path):
    write_idx_set(tmp_path / "d", n_train=40, n_test=30)
    a = load_dataset("mnist17", data_dir=tmp_path / "d", verify=False)
    b = load_dataset("mnist", data_dir=tmp_path / "d", classes=(1, 7), verify=False)
    assert a.name == "mnist17" and a.classes == (1, 7)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    c = load_dataset("mnist17", data_dir=tmp_path / "d", classes=[7, 1], verify=False)
    np.testing.assert_array_equal(c.y_train, 1 - a.y_train)
    with pytest.raises(ValueError, match=r"from \[1, 7\]"):
        load_dataset("mnist17", data_dir=tmp_path / "d", classes=(2, 3), verify=False)


@pytest.mark.parametrize("classes", [(1,), (1, 1), (1, 11), "17", (1.0, 7.0), (True, 7), 5,
                                     (-1, 2)])
def test_invalid_classes_have_one_message_shape(classes):
    with pytest.raises(ValueError) as info:
        load_dataset("digits", classes=classes)
    msg = str(info.value)
    assert msg.startswith("The 'classes' parameter of load_dataset must be None or a sequence "
                          "of at least 2 distinct class ids from [0, 1, ..., 9]. Got ")
    assert msg.endswith(f"Got {classes!r} instead.")


@pytest.mark.parametrize("kwargs,param", [
    (dict(name="imagenet"), "name"), (dict(name=3), "name"),
    (dict(name="digits", data_dir=3), "data_dir"),
    (dict(name="digits", download="yes"), "download"),
    (dict(name="digits", verify=1), "verify"),
])
def test_invalid_parameters(kwargs, param):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=f"^The '{param}' parameter of load_dataset must be"):
        load_dataset(name, **kwargs)


def test_names_are_normalised_and_listed():
    assert list_datasets() == ["cifar10", "digits", "fashion_mnist", "mnist", "mnist17"]
    assert load_dataset(" Digits ").name == "digits"
    with pytest.raises(ValueError, match="or 'npz:<path>'. Got 'foo' instead"):
        load_dataset("foo")


# ------------------------------------------------------------------------------------- digits

def test_digits_is_embedded_and_split_deterministically():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.x_train.dtype == np.float32 and ds.x_train.min() == 0 and ds.x_train.max() == 1
    assert ds.y_train[:10].tolist() == [6, 6, 6, 2, 5, 6, 6, 2, 2, 1]  # pinned split
    assert ds.y_test[:10].tolist() == [0, 8, 8, 9, 8, 3, 7, 5, 0, 6]
    again = load_dataset("digits")
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    from sklearn.datasets import load_digits
    total = np.sort(np.concatenate([ds.x_train, ds.x_test]).reshape(1797, -1) * 16, axis=0)
    np.testing.assert_array_equal(total, np.sort(load_digits().data, axis=0))
    sub = load_dataset("digits", classes=(3, 8))
    assert sub.n_classes == 2 and len(sub.y_train) + len(sub.y_test) == 357
    assert ds.source and ds.source[0].verified.startswith("bundled with scikit-learn")


# ---------------------------------------------------------------------------------------- npz

def test_npz_images_and_tabular(tmp_path):
    rng = np.random.default_rng(3)
    p = tmp_path / "img.npz"
    xtr = rng.integers(0, 256, (12, 5, 6), dtype=np.uint8)
    ytr = np.array([3, 8, 20] * 4)
    np.savez(p, x_train=xtr, y_train=ytr, x_test=xtr[:4], y_test=np.array([20, 3, 3, 8]),
             class_names=np.array(["three", "eight", "twenty"]))
    ds = load_dataset(f"npz:{p}")
    assert ds.name == f"npz:{p}" and ds.x_train.shape == (12, 1, 5, 6)
    assert ds.classes == (3, 8, 20) and ds.class_names == ("three", "eight", "twenty")
    np.testing.assert_array_equal(ds.y_train, [0, 1, 2] * 4)
    np.testing.assert_array_equal(ds.x_train[:, 0], xtr / np.float32(255))
    sub = load_dataset(f"npz:{p}", classes=(20, 3))
    assert sub.class_names == ("twenty", "three") and sub.y_test.tolist() == [0, 1, 1]
    assert ds.source[0].sha256 == sha256(p.read_bytes())

    q = tmp_path / "tab.npz"
    x = rng.random((10, 7))
    np.savez(q, x_train=x, y_train=np.arange(10) % 2, x_test=x[:3], y_test=np.array([1, 0, 1]))
    tab = load_dataset(f"npz:{q}")
    assert tab.input_shape == (7,) and tab.x_train.dtype == np.float32
    np.testing.assert_array_equal(tab.x_train, x.astype(np.float32))


def _npz(tmp_path, **arrays):
    base = dict(x_train=np.zeros((4, 3), np.float32), y_train=np.array([0, 1, 0, 1]),
                x_test=np.zeros((2, 3), np.float32), y_test=np.array([0, 1]))
    base.update(arrays)
    p = tmp_path / "bad.npz"
    np.savez(p, **{k: v for k, v in base.items() if v is not None})
    return f"npz:{p}"


@pytest.mark.parametrize("arrays,match", [
    (dict(y_test=None), r"lacks the array\(s\) y_test; it holds x_test, x_train, y_train"),
    (dict(x_train=np.array([{"a": 1}] * 4, dtype=object)), "allow_pickle=False"),
    (dict(y_train=np.array(["a", "b", "a", "b"], dtype=object)), "allow_pickle=False"),
    (dict(x_train=np.full((4, 3), 2.0)), r"values in \[0, 1\]"),
    (dict(x_train=np.full((4, 3), np.nan)), r"values in \[0, 1\]"),
    (dict(x_train=np.zeros((4, 3), np.int64)), "has dtype int64"),
    (dict(y_train=np.array([0.0, 1, 0, 1])), "1-D integer array of 4 labels"),
    (dict(y_train=np.array([0, 1, 0])), "1-D integer array of 4 labels"),
    (dict(x_test=np.zeros((2, 4), np.float32)), "x_test inputs"),
    (dict(x_train=np.zeros((4, 1, 1, 1, 3), np.float32)), "has shape"),
    (dict(y_train=np.zeros(4, int), y_test=np.zeros(2, int)), "need 2"),
    (dict(class_names=np.array(["a"])), "class_names must be"),
    (dict(y_train=np.array([0, 1, -7, 1])), r"y_train holds the label -7, outside the "
                                             r"allowed class ids \[0, 32766\]"),
    (dict(y_test=np.array([0, 10**12])), r"y_test holds the label 1000000000000, outside"),
])
def test_npz_rejections(tmp_path, arrays, match):
    with pytest.raises(DataFormatError, match=match):
        load_dataset(_npz(tmp_path, **arrays))


def test_npz_not_an_archive_or_missing(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip at all")
    with pytest.raises(DataFormatError, match=r"junk.npz is not a .npz archive .*"
                                              r"starts with b'not a '"):
        load_dataset(f"npz:{p}")
    p.write_bytes(b"PK\x03\x04 a torn zip")  # zip magic, truncated: numpy's reader says why
    with pytest.raises(DataFormatError, match="junk.npz is not a readable .npz"):
        load_dataset(f"npz:{p}")
    one = tmp_path / "one.npy"
    np.save(one, np.zeros(3))
    with pytest.raises(DataFormatError, match="single array"):
        load_dataset(f"npz:{one}")
    with pytest.raises(DatasetNotFoundError, match="is not a file"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


# ------------------------------------------------------------------------- folder resolution

def test_resolution_order(isolated, monkeypatch):
    tmp = isolated
    places = {
        "arg": tmp / "arg", "env": tmp / "env", "cwd": tmp / "cwd" / "data",
        "shared": tmp / "shared" / "data", "cache": tmp / "xdg-cache" / "poisoncert",
    }
    for n, root in enumerate(places.values()):
        write_idx_set(root / "mnist", n_train=11 + n, n_test=5)
    monkeypatch.setenv(paths.ENV_VAR, str(places["env"]))
    # cwd is tmp/cwd, so tmp/shared/data is a "shared/data" beside a parent folder.
    roots = [p for p, _ in search_roots(registry.DATASETS["mnist"], places["arg"])]
    assert roots[:5] == list(places.values())

    def n_train(**kw):
        return len(load_dataset("mnist", verify=False, **kw).y_train)

    assert n_train(data_dir=places["arg"]) == 11
    assert n_train() == 12
    monkeypatch.delenv(paths.ENV_VAR)
    assert n_train() == 13
    (places["cwd"] / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()  # incomplete: skipped
    assert n_train() == 14
    monkeypatch.chdir(tmp)  # tmp/shared/data is now beside the cwd itself, still found
    assert n_train() == 14
    shutil.rmtree(tmp / "shared")
    assert n_train() == 15
    # An explicit data_dir is the only place searched: one that lacks the files or does not
    # exist is an error, never a silent fallback to another copy.
    (tmp / "nothing-here").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"^The data folder '.*nothing-here' "
                                                   r"\(data_dir; CLI: --data.data_dir\) holds "
                                                   r"no MNIST files: .* only place searched"):
        n_train(data_dir=tmp / "nothing-here")
    with pytest.raises(DatasetNotFoundError, match=r"The data folder '.*no-such' \(data_dir; "
                                                   r"CLI: --data.data_dir\) does not exist"):
        n_train(data_dir=tmp / "no-such")


def test_env_var_may_list_several_folders(isolated, monkeypatch):
    write_idx_set(isolated / "b" / "mnist", n_train=17)
    monkeypatch.setenv(paths.ENV_VAR, f"{isolated / 'a'}{os.pathsep}{isolated / 'b'}")
    assert len(load_dataset("mnist", verify=False).y_train) == 17


def test_shared_data_found_above_the_package(isolated, monkeypatch):
    write_idx_set(isolated / "x" / "shared" / "data" / "mnist", n_train=19)
    monkeypatch.setattr(paths, "_PACKAGE_DIR", isolated / "x" / "repo" / "src" / "poisoncert")
    roots = search_roots(registry.DATASETS["mnist"])
    assert (isolated / "x" / "shared" / "data", "shared/data above the package") in roots
    assert len(load_dataset("mnist", verify=False).y_train) == 19


def test_the_walk_for_shared_data_stops_at_the_ceiling(isolated, monkeypatch):
    # what the fixture relies on: a shared/data above the ceiling is not searched, one at it is
    write_idx_set(isolated / "shared" / "data" / "mnist", n_train=23)
    inner = isolated / "inner"
    (inner / "cwd").mkdir(parents=True)
    monkeypatch.chdir(inner / "cwd")
    monkeypatch.setattr(paths, "_PACKAGE_DIR", inner / "site" / "poisoncert" / "data")
    monkeypatch.setattr(paths, "_WALK_CEILING", inner)
    assert not any("shared/data" in why for _, why in search_roots())
    monkeypatch.setattr(paths, "_WALK_CEILING", isolated)
    assert (isolated / "shared" / "data", "shared/data above the working directory") in (
        search_roots())
    assert len(load_dataset("mnist", verify=False).y_train) == 23


def test_debian_fashion_mnist_layout(isolated, monkeypatch):
    """Debian's dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/*-ubyte.gz."""
    fake = isolated / "usr-share-datasets"
    write_idx_set(fake / "fashion-mnist", n_train=23)
    spec = dataclasses.replace(registry.DATASETS["fashion_mnist"], extra_roots=(fake,))
    monkeypatch.setitem(registry.DATASETS, "fashion_mnist", spec)
    ds = load_dataset("fashion-mnist", verify=False)
    assert len(ds.y_train) == 23 and ds.class_names[0] == "T-shirt/top"
    assert search_roots(spec)[-1] == (fake, "Fashion-MNIST system package")
    assert registry.DATASETS["fashion_mnist"].extra_roots  # the real spec names Debian's root


def test_not_found_lists_places_and_how_to_fix(isolated):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for expected in ["./data", str(isolated / "xdg-cache" / "poisoncert"),
                     "no data_dir was given", "POISONCERT_DATA is not set",
                     "train-images-idx3-ubyte[.gz]", "mnist/", "download=True",
                     "--data.data_dir", "--data.download true"]:
        assert expected in msg, expected
    # a named data_dir is the only place searched, and the message says so
    (isolated / "given").mkdir()
    write_idx_set(isolated / "cwd" / "data" / "mnist")  # a copy elsewhere is not read
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=isolated / "given")
    msg = str(info.value)
    for expected in [f"'{isolated / 'given'}' (data_dir; CLI: --data.data_dir) holds no MNIST",
                     "train-images-idx3-ubyte[.gz]", "mnist/", "only place searched",
                     "--data.download true", str(isolated / "given" / "mnist")]:
        assert expected in msg, expected
    assert "./data" not in msg and "POISONCERT_DATA" not in msg


def test_not_found_mentions_incomplete_folders(isolated):
    write_idx_set(isolated / "cwd" / "data" / "mnist")
    (isolated / "cwd" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"incomplete: .*mnist lacks "
                                                   r"t10k-images-idx3-ubyte\[\.gz\]"):
        load_dataset("mnist")


# ------------------------------------------------------------------------------------ download

@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_download_failure_message(isolated, monkeypatch):
    calls = []

    def offline(url, timeout):
        calls.append((url, timeout))
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(download_mod, "_urlopen", offline)
    target = isolated / "dl"
    with pytest.raises(DownloadError) as info:
        load_dataset("mnist", data_dir=target, download=True)
    msg = str(info.value)
    assert isinstance(info.value, OSError)
    assert calls and all(t == download_mod.TIMEOUT_S for _, t in calls)
    for url in registry.MNIST_FILES["train_images"].urls:
        assert f"{url}: " in msg and "network is unreachable" in msg
    assert f"put it in {target / 'mnist'}" in msg
    assert "MNIST needs all of train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in msg
    assert not target.exists()  # no partial file, nor the folders made for the download


def test_download_from_an_unreachable_url_fails_fast(isolated, monkeypatch, no_proxy):
    known = dataclasses.replace(registry.MNIST_FILES["train_images"],
                                urls=("http://127.0.0.1:9/train-images-idx3-ubyte.gz",))
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"http://127\.0\.0\.1:9/train-images"):
        download_mod.download_file(known, isolated / "dl" / "x.gz", timeout=2)
    assert time.monotonic() - start < 10


def test_download_is_verified_and_atomic(isolated, monkeypatch):
    source = isolated / "served"
    write_idx_set(source)
    trust_tiny_idx(monkeypatch, source)
    served = {}
    for name in IDX_NAMES.values():
        served[name + ".gz"] = (source / f"{name}.gz").read_bytes()

    def fake_urlopen(url, timeout):
        name = url.rsplit("/", 1)[-1]
        if "ossci" in url:  # the first mirror serves garbage: rejected, next mirror used
            return io.BytesIO(gzip.compress(b"garbage"))
        return io.BytesIO(served[name])

    monkeypatch.setattr(download_mod, "_urlopen", fake_urlopen)
    ds = load_dataset("mnist", download=True)  # default target: the user cache
    folder = isolated / "xdg-cache" / "poisoncert" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(served)
    assert len(ds.y_train) == 30 and ds.source[0].path.startswith(str(folder))
    assert ds.source[0].verified.startswith("sha256 of content")


def test_a_download_shows_its_progress_with_the_rate_and_eta(isolated, monkeypatch, capsys):
    """CIFAR-10's 163 MiB downloaded in silence for minutes. A download now says what it
    fetches from where, then in a log (stderr no terminal) a line a minute with MiB, rate and
    ETA, and one at the end; without a Content-Length, no ETA."""
    import http.client

    source = isolated / "served"
    write_idx_set(source)
    trust_tiny_idx(monkeypatch, source)
    data = (source / "train-images-idx3-ubyte.gz").read_bytes()
    known = registry.MNIST_FILES["train_images"]
    ticks = iter(range(0, 10**6, 25))  # each reading of the clock is 25 s later

    class Response(io.BytesIO):  # a server's answer: its size in a header, 4 reads
        def __init__(self, sized):
            super().__init__(data)
            self.headers = http.client.HTTPMessage()
            if sized:
                self.headers["Content-Length"] = str(len(data))

        def read(self, n=-1):
            return super().read(-(-len(data) // 4))

    for sized in (True, False):
        monkeypatch.setattr(download_mod, "_urlopen", lambda url, timeout, s=sized: Response(s))
        monkeypatch.setattr(download_mod, "_clock", lambda: next(ticks))
        download_mod.download_file(known, isolated / f"dl{sized}" / "x.gz")
        err = capsys.readouterr().err.splitlines()
        mib = len(data) / 2**20
        head = f"downloading x.gz{f' ({mib:.1f} MiB)' if sized else ''} from {known.urls[0]}"
        assert err[0] == head, err
        # reads at 25, 50, 75, 100 s after the start: lines at 75 s (>= 60 s) and the end
        if sized:
            assert err[1:] == [f"  x.gz: {0.75 * mib:.1f}/{mib:.1f} MiB, "
                               f"{0.75 * mib / 75:.3g} MiB/s, 01:15 elapsed, ETA 00:25",
                               f"  x.gz: {mib:.1f}/{mib:.1f} MiB, {mib / 125:.3g} MiB/s, "
                               f"02:05 elapsed, ETA 00:00"], err
        else:
            assert [line.split(", ")[-1] for line in err[1:]] == ["01:15 elapsed",
                                                                  "02:05 elapsed"], err
        assert (isolated / f"dl{sized}" / "x.gz").read_bytes() == data
    # -q / --json: nothing on stderr (train said its downloads whatever it was told)
    with download_mod.quiet_downloads():
        download_mod.download_file(known, isolated / "dlq" / "x.gz")
    assert capsys.readouterr().err == ""
    assert (isolated / "dlq" / "x.gz").read_bytes() == data


@pytest.mark.parametrize("flags", [["-q"], ["--json"], []])
def test_train_quiet_or_json_silences_its_downloads(tmp_path, monkeypatch, flags):
    """``train -q`` and ``--json`` leave the download lines out, as they leave the bar out."""
    from typer.testing import CliRunner

    import poisoncert.experiment as experiment
    from poisoncert.cli import app

    seen = []

    def fake_train_run(*args, **kwargs):
        seen.append(download_mod._SHOW[0])
        raise ValueError("stopped here")

    monkeypatch.setattr(experiment, "train_run", fake_train_run)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {name: digits}\nselection: {scheme: without_replacement, ns: 10, "
                   "T: 2}\n")
    r = CliRunner().invoke(app, ["train", str(cfg), "--run-dir", str(tmp_path / "r"), *flags])
    assert r.exit_code == 1 and "stopped here" in r.output, r.output
    assert seen == [not flags] and download_mod._SHOW[0]


def test_download_with_bad_content_everywhere_leaves_nothing(isolated, monkeypatch):
    monkeypatch.setattr(download_mod, "_urlopen",
                        lambda url, timeout: io.BytesIO(b"<html>not found</html>"))
    with pytest.raises(DownloadError, match="Checksum mismatch"):
        load_dataset("cifar10", data_dir=isolated / "dl", download=True)
    assert not (isolated / "dl").exists()
    (isolated / "dl" / "mine").mkdir(parents=True)  # a folder the user made: kept, and
    with pytest.raises(DownloadError, match="Checksum mismatch"):  # what it holds
        load_dataset("cifar10", data_dir=isolated / "dl", download=True)
    assert [p.name for p in (isolated / "dl").iterdir()] == ["mine"]


# --------------------------------------------------------------------------- records and helpers

def test_dataset_record_is_frozen_and_validated():
    x = np.zeros((3, 2), np.float32)
    y = np.array([0, 1, 0])
    ds = Dataset("t", x, y, x[:1], y[:1], classes=(4, 5), class_names=("a", "b"),
                 source=(SourceFile("p", "0" * 64, "not verified"),))
    assert ds.n_classes == 2 and ds.input_shape == (2,) and "train=3" in repr(ds)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "u"
    with pytest.raises(ValueError, match="float32"):
        Dataset("t", x.astype(np.float64), y, x, y, (4, 5), ("a", "b"))
    with pytest.raises(ValueError, match=r"labels in \[0, 1\]"):
        Dataset("t", x, y + 1, x, y, (4, 5), ("a", "b"))
    with pytest.raises(ValueError, match="class names"):
        Dataset("t", x, y, x, y, (4, 5), ("a",))


def test_threaded_conversion_equals_the_plain_reference():
    src = np.random.default_rng(0).integers(0, 256, (4200, 3, 32, 11), dtype=np.uint8)
    assert src.size >= loaders._PARALLEL_MIN
    fast = loaders.to_unit_float32(src, 255)
    np.testing.assert_array_equal(fast, src.astype(np.float32) / np.float32(255))


def test_importing_poisoncert_data_does_not_import_torch():
    import subprocess
    code = "import sys, poisoncert.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------- real data (../shared/data)

def _shared_data() -> Path | None:
    env = os.environ.get(paths.ENV_VAR, "").split(os.pathsep)[0]
    if env and (Path(env) / "mnist").is_dir():
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data"
        if (candidate / "mnist").is_dir() or (candidate / "cifar10").is_dir():
            return candidate
    return None


SHARED = _shared_data()
needs_shared = pytest.mark.skipif(SHARED is None, reason="shared/data beside the repo absent")


@pytest.fixture(scope="module")
def real_mnist():
    return load_dataset("mnist", data_dir=SHARED)


@needs_shared
def test_real_mnist(real_mnist):
    ds = real_mnist
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.x_train.dtype == np.float32 and ds.x_train.min() == 0 and ds.x_train.max() == 1
    assert np.bincount(ds.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918,
                                                6265, 5851, 5949]
    assert len(ds.source) == 4 and all(s.verified.startswith("sha256") for s in ds.source)


@needs_shared
def test_real_mnist17_counts(real_mnist):
    ds = load_dataset("mnist17", data_dir=SHARED)
    assert len(ds.y_train) == 13007 and len(ds.y_test) == 2163
    assert ds.classes == (1, 7) and ds.x_train.shape[1:] == (1, 28, 28)
    ones = real_mnist.x_train[real_mnist.y_train == 1]
    np.testing.assert_array_equal(ds.x_train[ds.y_train == 0], ones)


@needs_shared
def test_real_mnist17_found_without_any_setting(monkeypatch):
    """From the repository root, shared/data is found beside it with no option at all."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    ds = load_dataset("mnist17")
    assert len(ds.y_train) == 13007
    assert Path(ds.source[0].path).resolve().is_relative_to(SHARED.resolve())


@needs_shared
def test_real_cifar10():
    start = time.perf_counter()
    ds = load_dataset("cifar10", data_dir=SHARED)
    elapsed = time.perf_counter() - start
    assert ds.x_train.shape == (50000, 3, 32, 32) and ds.x_test.shape == (10000, 3, 32, 32)
    assert ds.x_train.dtype == np.float32
    assert np.bincount(ds.y_train).tolist() == [5000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    mean = ds.x_train.mean(axis=(0, 2, 3), dtype=np.float64)
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=5e-4)  # 4 printed digits
    std = ds.x_train[:10000].std(axis=(0, 2, 3), dtype=np.float64)
    # published over all 50,000 images; a 10,000-image subset's std differs by ~1e-3
    np.testing.assert_allclose(std, [0.2470, 0.2435, 0.2616], atol=5e-3)
    assert ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"
    assert ds.source[0].verified.startswith("sha256")
    assert elapsed < 20, f"loading CIFAR-10 took {elapsed:.1f} s"


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian dataset-fashion-mnist absent")
def test_real_fashion_mnist_from_debian(monkeypatch):
    ds = load_dataset("fashion_mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert all(s.verified.startswith("sha256: Debian") for s in ds.source)


# --------------------------------------------------------------------------------------------
# Deskewing (a fixed per-image preprocessing)


def _moments(img):
    img = np.asarray(img, dtype=np.float64)
    ys, xs = np.mgrid[:img.shape[0], :img.shape[1]]
    m = img.sum()
    cy, cx = (img * ys).sum() / m, (img * xs).sum() / m
    vyy = (img * (ys - cy) ** 2).sum() / m
    vxy = (img * (ys - cy) * (xs - cx)).sum() / m
    return cy, cx, vxy / vyy


def test_deskew_straightens_a_slanted_stroke_and_centres_it():
    from poisoncert.data.transforms import deskew

    img = np.zeros((28, 28), dtype=np.float32)
    for r in range(4, 24):  # a stroke leaning right by 0.4 px per row, off-centre
        q = 6 + 0.4 * (r - 4)
        img[r, int(q)] += 1 - (q - int(q))
        img[r, int(q) + 1] += q - int(q)
    cy, cx, slope = _moments(img)
    assert abs(slope - 0.4) < 0.05 and abs(cx - 13.5) > 3
    out = deskew(img[None])[0]
    cy2, cx2, slope2 = _moments(out)
    assert abs(slope2) < 0.05 * abs(slope)
    assert abs(cy2 - 13.5) < 0.1 and abs(cx2 - 13.5) < 0.1
    assert abs(out.sum() - img.sum()) < 0.02 * img.sum()  # ink is kept (nothing falls off)


def test_deskew_keeps_centred_upright_images_blank_images_dtype_and_channels():
    from poisoncert.data.transforms import deskew

    img = np.zeros((2, 1, 28, 28), dtype=np.float64)
    img[0, 0, 6:22, 10:18] = 1.0  # symmetric about the centre: nothing to do
    out = deskew(img)
    assert out.dtype == np.float64 and out.shape == img.shape
    # float64 resampling at coordinates exact up to ~28 ulps; pixel values in [0, 1]
    np.testing.assert_allclose(out[0], img[0], atol=1e-12)
    np.testing.assert_array_equal(out[1], img[1])  # no ink: unchanged
    # colour: moments of the channel mean, every channel moved alike
    rng = np.random.default_rng(0)
    x = rng.random((3, 3, 16, 16)).astype(np.float32)
    x[:, :, :, :4] = 0
    got = deskew(x)
    assert got.shape == x.shape and got.dtype == np.float32
    # every channel is resampled at the same coordinates (those of the channel mean), so
    # by linearity the mean of the outputs is the deskewed mean image
    # computed in float64, each side rounded to float32 (and its mean taken in float32):
    # a few float32 ulps (1.2e-7) of values in [0, 1]
    np.testing.assert_allclose(got.mean(1), deskew(x.mean(1, keepdims=True))[:, 0],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'x' parameter of deskew"):
        deskew(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="'x' parameter of deskew"):
        deskew(np.zeros((2, 8, 8), dtype=np.uint8))


def _deskew_clipped_reads(x: np.ndarray) -> np.ndarray:
    """The former ``transforms._deskew`` (until session 9): each bilinear corner read with
    its indices clipped into the image and its weight zeroed outside it. The library's
    faster form must give the same bits, or runs trained before it would not resume to the
    same predictions."""
    n, c, h, w = x.shape
    ink = x.astype(np.float64).mean(1)
    ys = np.arange(h, dtype=np.float64)[None, :, None]
    xs = np.arange(w, dtype=np.float64)[None, None, :]
    mass = ink.sum((1, 2))
    empty = mass <= 0
    m = np.where(empty, 1.0, mass)
    cy = (ink * ys).sum((1, 2)) / m
    cx = (ink * xs).sum((1, 2)) / m
    dy = ys - cy[:, None, None]
    vyy = (ink * dy**2).sum((1, 2)) / m
    vxy = (ink * dy * (xs - cx[:, None, None])).sum((1, 2)) / m
    slope = np.where(vyy > 0, vxy / np.where(vyy > 0, vyy, 1.0), 0.0)
    oy, ox = (h - 1) / 2, (w - 1) / 2
    cy, cx = np.where(empty, oy, cy), np.where(empty, ox, cx)
    slope = np.where(empty, 0.0, slope)
    src_y = np.broadcast_to(ys + (cy - oy)[:, None, None], (n, h, w))
    src_x = xs + (cx - ox)[:, None, None] + slope[:, None, None] * (ys - oy)
    y0, x0 = np.floor(src_y), np.floor(src_x)
    fy, fx = src_y - y0, src_x - x0
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    out = np.zeros((n, c, h, w), dtype=np.float64)
    img = np.arange(n)[:, None, None]
    for oy_, wy in ((0, 1 - fy), (1, fy)):
        for ox_, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + oy_, x0 + ox_
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            vals = x[img, :, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
            out += np.moveaxis(vals * (wy * wx * ok)[..., None], -1, 1)
    return out.astype(x.dtype)


@pytest.mark.parametrize("shape, dtype", [((600, 1, 28, 28), np.float32),
                                          ((40, 3, 32, 32), np.float32),
                                          ((50, 2, 9, 13), np.float64)])
def test_deskew_gives_the_former_implementations_bits(shape, dtype):
    """Same bits as the clipped-read form, on images whose reads leave the image (strokes at
    the border, strong slants), blank images, negative values and several channels; and on
    real MNIST digits where the data are there."""
    from poisoncert.data.transforms import deskew

    rng = np.random.default_rng(sum(shape))
    x = (rng.random(shape) ** 4).astype(dtype)
    x[:, :, :, : shape[3] // 3] *= 0.1  # ink off-centre: reads outside the image
    x[1] = 0  # blank
    x[2] = -x[2]  # negative ink: no mass, unchanged
    x[3] = np.tril(np.ones(shape[2:]))[None] * rng.random((shape[1], 1, 1))  # a strong slant
    x[4, :, 1:-1, 1:-1] = 0  # only the border
    got = deskew(x)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, _deskew_clipped_reads(x))
    assert np.array_equal(got.view(np.uint8), _deskew_clipped_reads(x).view(np.uint8))
    for batch in (1, 7, 8192):  # an image's bits do not depend on its batch
        assert np.array_equal(deskew(x, batch=batch).view(np.uint8), got.view(np.uint8))
    for threads in (1, 3, 16):  # nor on the threads that share the batches
        assert np.array_equal(deskew(x, batch=7, threads=threads).view(np.uint8),
                              got.view(np.uint8))
    from poisoncert.data import DataError, load_dataset

    try:
        digits = load_dataset("mnist").x_test[:2000]
    except (DataError, FileNotFoundError):
        return
    assert np.array_equal(deskew(digits).view(np.uint8),
                          _deskew_clipped_reads(digits).view(np.uint8))


def test_deskew_config_applies_to_train_and_test_and_keeps_old_hashes():
    from poisoncert.config import config_hash, from_dict, to_dict
    from poisoncert.data.transforms import deskew
    from poisoncert.experiment import split_data

    base = {"data": {"name": "digits", "test_limit": 50},
            "selection": {"scheme": "with_replacement", "ns": 20, "T": 4}}
    plain = split_data(from_dict(base).data)
    cfg = from_dict(base, {"data.deskew": True})
    prep = split_data(cfg.data)
    np.testing.assert_array_equal(prep.x_train, deskew(plain.x_train))
    np.testing.assert_array_equal(prep.x_test, deskew(plain.x_test))
    info, plain_info = prep.summary.manifest(), plain.summary.manifest()
    assert info["deskew"] is True and "deskew" not in plain_info
    assert info["sha256_arrays"] == plain_info["sha256_arrays"]  # the raw data's
    assert config_hash(cfg) != config_hash(from_dict(base))
    d = to_dict(from_dict(base))
    del d["data"]["deskew"]  # a config written before the key existed
    assert config_hash(from_dict(d)) == config_hash(from_dict(base))
