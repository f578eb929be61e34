"""Download CIFAR-10, CIFAR-100 and Fashion-MNIST from their official homes.

Every file is streamed into a temporary folder inside `root`, its MD5 (and
SHA-256 where published) checked, archives unpacked there with tarfile's
"data" filter, and only then is the finished folder moved into place with one
``os.replace``. A failure at any point (network, checksum, a kill) leaves
nothing behind but, at worst, a hidden ``.name.*`` temporary folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ravit.data.base import describe_error

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)
Opener = Callable[[str], BinaryIO]
CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
    url: str
    md5: str | None
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    folder: str  # what ends up in root; load_data takes "NAME:root/folder"
    files: tuple[Remote, ...]
    archive: bool  # True: one .tar.gz that unpacks to `folder`


_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SOURCES: dict[str, Source] = {
    "cifar10": Source(
        "cifar-10-batches-py",
        (
            Remote(
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                md5="c58f30108f718f92721af3b95e74349a",
                sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            ),
        ),
        archive=True,
    ),
    "cifar100": Source(
        "cifar-100-python",
        (
            Remote(
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                md5="eb9058c3a382ffc7106e4002c42a8d85",
                sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
            ),
        ),
        archive=True,
    ),
    "fashion-mnist": Source(
        "fashion-mnist",
        (
            Remote(_FASHION + "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            Remote(_FASHION + "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            Remote(_FASHION + "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            Remote(_FASHION + "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        archive=False,
    ),
}


def download_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    progress: Progress | None = None,
    urlopen: Opener | None = None,
) -> Path:
    """Fetch, verify and unpack data set `name` into `root`; return its folder.

    The folder is what ``load_data(f"{name}:{folder}", split)`` reads. An
    existing folder is returned as is (nothing is fetched). `progress` is
    called with (bytes so far, total or None) per chunk; `urlopen(url)` returns
    a readable binary stream (default: urllib's, which also reads file:// URLs).
    """
    if name not in SOURCES:
        raise ValueError(f"cannot download {name!r}; downloadable: {', '.join(SOURCES)}")
    source = SOURCES[name]
    root = Path(root).expanduser()
    target = root / source.folder
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{source.folder}.", dir=root))
    try:
        staged = work / source.folder
        fetch_dir = work / "archive" if source.archive else staged
        fetch_dir.mkdir()
        for remote in source.files:
            fetch_verified(remote, fetch_dir / remote.filename, progress=progress, urlopen=urlopen)
        if source.archive:
            for remote in source.files:
                extract_tar(fetch_dir / remote.filename, work)
            if not staged.is_dir():
                raise ValueError(
                    f"{source.files[0].url}: the archive holds no {source.folder}/ folder"
                )
        os.replace(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def fetch_verified(
    remote: Remote,
    dest: str | os.PathLike,
    *,
    progress: Progress | None = None,
    urlopen: Opener | None = None,
) -> Path:
    """Stream `remote.url` to a temporary file beside `dest`, check it, move it to `dest`.

    A checksum mismatch raises ValueError naming the URL and both digests; the
    partial file is removed. Network errors raise OSError naming the URL.
    """
    dest = Path(dest)
    opener = urlopen or (lambda url: urllib.request.urlopen(url, timeout=60))
    digests = {"md5": hashlib.md5(usedforsecurity=False), "sha256": hashlib.sha256()}
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            _copy(opener, remote.url, out, digests, progress)
        for kind, expected in (("md5", remote.md5), ("sha256", remote.sha256)):
            got = digests[kind].hexdigest()
            if expected and got != expected.lower():
                raise ValueError(
                    f"{remote.url}: {kind} {got} != the published {expected}: the download is "
                    "corrupt or the file changed; nothing was kept"
                )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _copy(opener: Opener, url: str, out: BinaryIO, digests: dict, progress: Progress | None):
    try:
        with opener(url) as stream:
            total = getattr(stream, "length", None)
            done = 0
            while chunk := stream.read(CHUNK):
                out.write(chunk)
                for digest in digests.values():
                    digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except OSError as err:  # urllib's URLError is an OSError
        raise OSError(f"{url}: download failed ({describe_error(err)})") from err


def extract_tar(archive: Path, dest: Path) -> None:
    """Unpack a .tar.gz; members may not leave `dest` (links, absolute paths, ..)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                for member in tar.getmembers():
                    inside = (dest / member.name).resolve().is_relative_to(dest.resolve())
                    if not (member.isfile() or member.isdir()) or not inside:
                        raise tarfile.TarError(f"unsafe member {member.name!r}")
                tar.extractall(dest)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{archive}: not a readable tar archive ({describe_error(err)})") from None
