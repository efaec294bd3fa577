"""Writing files so that a crash never leaves a half-written one, and one writer per folder.

    atomic_write(path, data)          # the old file or the new one, never a mix, even after a power cut
    with FolderLock(folder):          # a second process gets FolderBusy instead of mixing files with ours
        ...

File modes: everything tinymix writes is created the way `open()` creates files, 0o666 minus the
umask (0644 under the usual umask 022), and folders 0o777 minus the umask. (tempfile.mkstemp would make
0600 files, tempfile.mkdtemp 0700 folders: they are not used for anything that stays.)
"""
import errno
import hashlib
import os
import secrets
import shutil
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"      # atomic_write's temporary files: "." + name + "." + random hex + ".tmp"


def temporary_name(path):
    """A fresh hidden name beside `path`, for a file or folder that is renamed onto it when complete."""
    path = Path(path)
    return path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"


def is_temporary(path):
    """True for a name that atomic_write or temporary_name made (a leftover if no writer is running)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX) and name.count(".") >= 3


def atomic_write(path, data):
    """Write bytes to `path` atomically and durably: a temporary file in the same folder, flushed to
    disk, then renamed over `path`, then the folder flushed. A crash at any moment leaves the previous
    file (or none) under the real name, and at worst a temporary file that `is_temporary` recognises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # the umask applies
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno and not error.filename:   # a full disk: say where
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    sync_folder(path.parent)


def sync_folder(folder):
    """Flush a folder's entries (new names, renames) to disk. A no-op where folders cannot be opened."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def remove_tree(folder):
    """Delete a folder that tinymix wrote, with everything in it."""
    shutil.rmtree(folder)


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock."""


class FolderLock:
    """An exclusive lock on a folder, held by this process until `release` (or exit, or a kill: the
    operating system drops it with the process, so a crashed run never leaves a stale lock). The lock
    file (`.lock` in the folder unless `name` says otherwise) stays and names the last holder's process
    id: deleting it could let two processes lock two different files."""

    def __init__(self, folder, purpose="a tinymix run", wait=False, name=".lock"):
        self.folder, self.purpose, self.wait, self.name, self.file = Path(folder), purpose, wait, name, None

    def acquire(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        file = open(self.folder / self.name, "a+")
        try:
            _lock(file, self.wait)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            file.close()
            raise FolderBusy(f"{self.folder} is in use by {self.purpose} in another process (process id "
                             f"{holder}): wait for it to finish, or choose another folder") from None
        except BaseException:
            file.close()
            raise
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self.file = file
        return self

    def release(self):
        if self.file is not None:
            self.file.close()            # closing the file drops the lock
            self.file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _lock(file, wait):
    try:
        import fcntl
    except ImportError:                  # Windows (untested): lock the file's first byte instead
        import msvcrt
        file.seek(0)
        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
        except OSError as error:
            raise BlockingIOError(errno.EWOULDBLOCK, str(error)) from None
        return
    fcntl.flock(file.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)


def sha256(path):
    """The sha256 of a file, in hex, read 1 MiB at a time (a weights file need not fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
