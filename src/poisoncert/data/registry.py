"""What poisoncert knows about each named data set: files, digests, URLs, classes.

Digests (SHA-256 unless named otherwise) and where each comes from
-----------------------------------------------------------------
A file is accepted when its SHA-256 is one of ``KnownFile.sha256``, or, for a gzipped IDX
file, when the SHA-256 of its *decompressed* content is one of ``KnownFile.content_sha256``
(a plain, already decompressed IDX file is checked the same way), or, for a file with an
official MD5 only, when its MD5 is one of ``KnownFile.md5``. Content digests make the check
independent of how a file was (re)compressed: the shared copies and Debian's package
recompress the official ``.gz`` files, so their ``.gz`` digests differ from the official ones
while the images and labels are byte-identical.

MNIST
    ``.gz`` official: SHA-256 as published by several independent projects (TensorFlow
    datasets, torchvision prototypes and others) for the files at the official mirrors;
    official MD5s as listed by torchvision. Decompressed: the SHA-256 of the four IDX files of
    ``shared/data/mnist``, whose MD5s equal the official decompressed MD5s
    (``6bbc9ace...``, ``a25bea73...``, ``2646ac64...``, ``27ae3e4e...``) and whose SHA-256s of
    the training files equal independently published values. ``shared copy``:
    ``shared/data/SHA256SUMS``.
Fashion-MNIST
    ``.gz`` official: MD5 from the upstream README (also installed by Debian as
    ``/usr/share/doc/dataset-fashion-mnist/README.md.gz``); SHA-256 as published by several
    independent projects (sizes 26,421,880 / 29,515 / 4,422,102 / 5,148 bytes). Debian's
    ``dataset-fashion-mnist`` 0.0~git20200523.55506a9-1 ships recompressed ``.gz`` files
    (26,421,856 / 29,491 / 4,422,079 / 5,125 bytes; their SHA-256 are listed as ``debian``);
    their decompressed MD5s equal the published decompressed MD5s (``f4a8712d...``,
    ``9018921c...``, ``8181f547...``, ``15d48437...``), and the decompressed SHA-256 were
    computed from them.
CIFAR-10 (binary version)
    Official ``cifar-10-binary.tar.gz``: MD5 ``c32a1d4a...`` from the CIFAR page; SHA-256
    ``c4a38c50...`` (170,052,171 bytes) as recorded by an independent project (not verified
    here: no official copy is at hand, so the MD5 is accepted as well). ``shared copy``:
    ``shared/data/SHA256SUMS`` (its training batches are a fixed shuffle of the official
    order, so it differs from the official archive); the per-batch digests are those of its
    members, used for an extracted ``cifar-10-batches-bin/`` folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DATASETS", "DatasetSpec", "KnownFile", "identify_digest", "list_datasets"]


@dataclass(frozen=True)
class KnownFile:
    """One file of a data set and the digests that identify a good copy of it.

    ``name`` is the file name without ``.gz`` for IDX files (``train-images-idx3-ubyte``),
    with which both ``name`` and ``name + ".gz"`` are accepted.
    Each digest map is ``{hex digest: origin}``; the origin is shown in errors and stored in
    :class:`~poisoncert.data.SourceFile`.
    """

    name: str
    sha256: dict[str, str] = field(default_factory=dict)
    content_sha256: dict[str, str] = field(default_factory=dict)
    md5: dict[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """A named data set: its format, files, classes and where to look for it."""

    name: str
    title: str
    kind: str  # "idx", "cifar" or "digits"
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    files: dict[str, KnownFile] = field(default_factory=dict)
    subfolders: tuple[str, ...] = ()
    default_classes: tuple[int, ...] | None = None
    extra_roots: tuple[Path, ...] = ()
    homepage: str = ""


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
_CIFAR10_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)

_SHARED = "project shared copy, recompressed .gz"
_DEBIAN = "Debian dataset-fashion-mnist 0.0~git20200523.55506a9-1, recompressed .gz"
_OFFICIAL = "official"
_CONTENT = "official decompressed IDX content"


def _idx(name: str, mirrors: tuple[str, ...], *, official: str, md5: str, content: str,
         other: dict[str, str]) -> KnownFile:
    return KnownFile(
        name=name,
        sha256={official: _OFFICIAL, **other},
        content_sha256={content: _CONTENT},
        md5={md5: _OFFICIAL},
        urls=tuple(m + name + ".gz" for m in mirrors),
    )


MNIST_FILES: dict[str, KnownFile] = {
    "train_images": _idx(
        "train-images-idx3-ubyte", _MNIST_MIRRORS,
        official="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
        content="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        other={"0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971": _SHARED},
    ),
    "train_labels": _idx(
        "train-labels-idx1-ubyte", _MNIST_MIRRORS,
        official="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        md5="d53e105ee54ea40749a09fcbcd1e9432",
        content="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        other={"1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203": _SHARED},
    ),
    "test_images": _idx(
        "t10k-images-idx3-ubyte", _MNIST_MIRRORS,
        official="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        md5="9fb629c4189551a2d022fa330f9573f3",
        content="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        other={"1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be": _SHARED},
    ),
    "test_labels": _idx(
        "t10k-labels-idx1-ubyte", _MNIST_MIRRORS,
        official="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        md5="ec29112dd5afa0611ce80d1b7f02629c",
        content="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        other={"b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b": _SHARED},
    ),
}

FASHION_FILES: dict[str, KnownFile] = {
    "train_images": _idx(
        "train-images-idx3-ubyte", _FASHION_MIRRORS,
        official="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        content="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        other={"b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7": _DEBIAN},
    ),
    "train_labels": _idx(
        "train-labels-idx1-ubyte", _FASHION_MIRRORS,
        official="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        md5="25c81989df183df01b3e8a0aad5dffbe",
        content="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        other={"0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056": _DEBIAN},
    ),
    "test_images": _idx(
        "t10k-images-idx3-ubyte", _FASHION_MIRRORS,
        official="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        md5="bef4ecab320f06d8554ea6380940ec79",
        content="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        other={"cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa": _DEBIAN},
    ),
    "test_labels": _idx(
        "t10k-labels-idx1-ubyte", _FASHION_MIRRORS,
        official="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        md5="bb300cfdad3c16e7a12a480ee83cd310",
        content="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        other={"8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05": _DEBIAN},
    ),
}

_CIFAR_SHARED = "project shared copy, training batches in a fixed shuffle"

CIFAR10_FILES: dict[str, KnownFile] = {
    "archive": KnownFile(
        name="cifar-10-binary.tar.gz",
        sha256={
            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd": _OFFICIAL,
            "b823485d6250a31d53d79f549beb836f1e50b477bcb10b2403bfa63fe1152f41": _CIFAR_SHARED,
        },
        md5={"c32a1d4ab5d03f1284b67883e8d87530": _OFFICIAL},
        urls=_CIFAR10_URLS,
    ),
    **{
        f"batch_{i}": KnownFile(name=f"data_batch_{i}.bin", sha256={d: _CIFAR_SHARED})
        for i, d in enumerate(
            (
                "3feaf12a59035454497cbdbb3aa69b7aeb1b1a23e00e1946fd8de0e621902b49",
                "45b3a59e4943c2f01346071d5b23278c6d310147582f1567254cd456b51e15b2",
                "ee0175f1643ce2dda98ee42c4896cef235ded3ab72ce24e0de8041b39426cc77",
                "b1b56cbdf7dc7e4dd3d4683348b259ab66dd119402b69a22df7f3481cc275434",
                "b78076481210291fe13bb7c56ac1338517e7d22f7b093d3f013f43d322ae1854",
            ),
            start=1,
        )
    },
    "test_batch": KnownFile(
        name="test_batch.bin",
        sha256={"de0f2080005e1e76bfd2f90f072c2c452ee35cae4cce48937f8b432c60cf416b": _CIFAR_SHARED},
    ),
}

_DIGITS = tuple(str(i) for i in range(10))

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", title="MNIST", kind="idx", class_ids=tuple(range(10)),
        class_names=_DIGITS, files=MNIST_FILES, subfolders=("mnist", "MNIST/raw", "MNIST"),
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "mnist17": DatasetSpec(
        name="mnist17", title="MNIST 1/7", kind="idx", class_ids=tuple(range(10)),
        class_names=_DIGITS, files=MNIST_FILES, subfolders=("mnist", "MNIST/raw", "MNIST"),
        default_classes=(1, 7), homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist", title="Fashion-MNIST", kind="idx", class_ids=tuple(range(10)),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
        files=FASHION_FILES,
        subfolders=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST"),
        # Debian's package dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/*.gz
        extra_roots=(Path("/usr/share/datasets"),),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "cifar10": DatasetSpec(
        name="cifar10", title="CIFAR-10", kind="cifar", class_ids=tuple(range(10)),
        class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                     "ship", "truck"),
        files=CIFAR10_FILES, subfolders=("cifar10", "cifar-10", "CIFAR10"),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "digits": DatasetSpec(
        name="digits", title="scikit-learn digits (8x8)", kind="digits",
        class_ids=tuple(range(10)), class_names=_DIGITS,
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
    ),
}

ALIASES = {
    "fashion": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "cifar_10": "cifar10",
    "mnist_17": "mnist17",
    "mnist_1_7": "mnist17",
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`~poisoncert.data.load_dataset`, besides ``"npz:<path>"``."""
    return sorted(DATASETS)


def identify_digest(digest: str) -> str | None:
    """Name the known file a digest belongs to (``"MNIST train-images-idx3-ubyte"``), if any.

    Used to explain a checksum mismatch such as Fashion-MNIST files in an MNIST folder.
    """
    seen = set()
    for spec in DATASETS.values():
        for known in spec.files.values():
            if id(known) in seen:
                continue
            seen.add(id(known))
            for table in (known.sha256, known.content_sha256, known.md5):
                if digest in table:
                    return f"{spec.title} {known.name} ({table[digest]})"
    return None
