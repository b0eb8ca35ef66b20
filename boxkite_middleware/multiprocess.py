"""Multi-process mode: the directory where every worker keeps its counts, and its upkeep.

prometheus_client gives every process its own ``{type}_{pid}.db`` files and sums them all on
each scrape. Around that, a long-running server needs:

- **Files that cannot be confused.** Each process's own series live in
  ``{type}_boxkite_{pid}_{token}.db`` (a random token: a reused pid never reopens a dead
  process's file), held under an exclusive ``flock`` for the process's life. The kernel drops
  the lock when the process dies, even by SIGKILL, so "is its owner alive?" is asked of the
  lock, never of a pid. The files are written whole with ``write()`` before they are mapped:
  a full disk is an ``OSError`` at creation, never a SIGBUS at a later store.
- **Folding.** A dead process's counter, histogram and summary files are added into one
  ``{type}_archive.db`` per type and removed, so that the files (and the scrape time) stay
  proportional to the live workers. The archive is written to a temporary name and renamed
  into place. Anyone may fold: gunicorn's master when a worker exits, any worker when it
  starts (uvicorn ``--workers`` has no master hooks). A fold that cannot run now (the lock is
  busy, the disk is full) leaves the files where they are, still counted, for the next one.
- **Scrapes that block nobody.** Folding takes the directory lock exclusively, scrapes take it
  shared and only while they read the files' bytes; parsing and encoding happen after. The
  folder only ever tries the lock for a bounded time, so a busy scraper never stalls gunicorn's
  master.
- **A directory that is ours.** Refused if owned by another user or world-writable without
  the sticky bit; every file is opened with ``O_NOFOLLOW`` and read only if it is a regular
  file of ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import mmap
import os
import secrets
import stat
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
LOCK_FILE = "boxkite.lock"
OWN_INFIX = "boxkite"
"""Our files are ``{type}_boxkite_{pid}_{token}.db``."""
ARCHIVE = "archive"
ACCUMULATING = ("counter", "histogram", "summary")
PROMETHEUS_PATTERNS = ("counter_*.db", "gauge_*.db", "histogram_*.db", "summary_*.db")
"""The files prometheus_client writes (ours match them too); nothing else is ever removed."""
BASELINE_PREFIX = "boxkite_baseline_"
"""``boxkite_baseline_{id}.json``: a baseline and its labels, for whichever process scrapes."""

logger = logging.getLogger("boxkite_middleware")


def enabled() -> bool:
    """Whether prometheus_client chose mmap files (``PROMETHEUS_MULTIPROC_DIR`` at its import)."""
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False))


def directory() -> str:
    return os.environ[ENVIRONMENT]


class UnsafeDirectory(RuntimeError):
    """Others could plant or remove files in the directory: refused, always."""


class UnusableDirectory(RuntimeError):
    """The directory is missing or not writable."""


def check_directory(path: str) -> None:
    """Fail at start-up, not at the first request, when the directory cannot be used."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise UnusableDirectory(f"{ENVIRONMENT}={path!r} is not a directory ({error})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UnusableDirectory(f"{ENVIRONMENT}={path!r} is not a directory")
    check_safe(path)
    if not os.access(path, os.W_OK | os.X_OK):
        raise UnusableDirectory(f"{ENVIRONMENT}={path!r} is not writable")


def check_safe(path: str) -> None:
    """Refuse a directory owned by another user or world-writable without the sticky bit."""
    try:
        info = os.stat(path)
    except OSError:
        return  # nothing to plant into; `check_directory` says it is missing
    if info.st_uid != os.geteuid():
        raise UnsafeDirectory(
            f"{ENVIRONMENT}={path!r} belongs to uid {info.st_uid}, not to this server "
            f"(uid {os.geteuid()}): anyone who owns it can plant or remove metric files"
        )
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        raise UnsafeDirectory(
            f"{ENVIRONMENT}={path!r} is world-writable without the sticky bit: "
            "anyone could plant or remove metric files (chmod o-w or +t)"
        )


# -- prometheus_client's file layout ----------------------------------------------------------
# A 4-byte "used" length, 4 bytes of padding, then entries: a 4-byte key length, the UTF-8 key
# padded with spaces so that the two doubles that follow (value, timestamp) are 8-aligned.
# `self_check` holds this against prometheus_client's own MmapedDict at start-up.

_HEADER = 8
_INT = struct.Struct("i")
_DOUBLES = struct.Struct("dd")


def _entry(key: str, value: float) -> bytes:
    encoded = key.encode("utf-8")
    padded = encoded + b" " * (8 - (len(encoded) + 4) % 8)
    return _INT.pack(len(encoded)) + padded + _DOUBLES.pack(value, 0.0)


def encode(entries: Iterable[tuple[str, float]]) -> tuple[bytes, list[int]]:
    """A whole file for ``(key, value)`` entries, and each value's byte offset."""
    chunks = [b"\0" * _HEADER]
    offsets = []
    used = _HEADER
    for key, value in entries:
        chunk = _entry(key, value)
        chunks.append(chunk)
        used += len(chunk)
        offsets.append(used - 16)
    data = bytearray(b"".join(chunks))
    data[0:4] = _INT.pack(used)
    return bytes(data), offsets


def decode(data: bytes) -> Iterator[tuple[str, float, float]]:
    """``(key, value, timestamp)`` of a file's bytes; stops at a truncated entry."""
    for key, position in positions(data):
        value, timestamp = _DOUBLES.unpack_from(data, position)
        yield key, value, timestamp


def positions(data: bytes) -> Iterator[tuple[str, int]]:
    """Each key of a file's bytes and its value's byte offset; stops at a truncated entry."""
    if len(data) < _HEADER:
        return
    used = min(_INT.unpack_from(data, 0)[0], len(data))
    position = _HEADER
    while position + 4 <= used:
        length = _INT.unpack_from(data, position)[0]
        position += 4
        start = position
        position += length + (8 - (length + 4) % 8)
        if length < 0 or position + 16 > used:
            return
        yield data[start : start + length].decode("utf-8"), position
        position += 16


_checked = False


def self_check(path: str) -> None:
    """Write a file the way we do and read it with prometheus_client, and the reverse: a
    release that changed its layout fails here, at start-up, not in silently wrong counts.
    Once per process."""
    global _checked
    if _checked:
        return
    from prometheus_client.mmap_dict import MmapedDict

    probe = os.path.join(path, f".boxkite-check-{os.getpid()}-{secrets.token_hex(4)}")
    expected = {'["a", "a", {"le": "1.0"}, ""]': 3.0, '["b", "bb", {}, "é"]': 0.5}
    try:
        data, _ = encode(expected.items())
        descriptor = os.open(probe, _open_flags(os.O_WRONLY | os.O_CREAT | os.O_EXCL), 0o600)
        _write_all(descriptor, data)
        os.close(descriptor)
        try:
            read = MmapedDict.read_all_values_from_file(probe)
            theirs = {key: value for key, value, _, _ in read}
        except (RuntimeError, ValueError, struct.error):
            theirs = {}
        os.remove(probe)
        written = MmapedDict(probe)
        for key, value in expected.items():
            written.write_value(key, value, 0.0)
        written.close()
        with open(probe, "rb") as file:
            ours = {key: value for key, value, _ in decode(file.read())}
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(probe)
    if theirs != expected or ours != expected:
        raise RuntimeError(
            "this prometheus_client release lays out its multiprocess files differently; "
            "boxkite-middleware cannot share them (pin prometheus-client to a supported release)"
        )
    _checked = True


# -- this process's own files -----------------------------------------------------------------


def _open_flags(flags: int) -> int:
    """Never through a symlink someone planted, never into a child process."""
    return flags | os.O_NOFOLLOW | os.O_CLOEXEC


class OwnFile:
    """One of this process's files: locked for the process's life, mapped for counting.

    Entry ``i`` of the file is the float64 at byte ``offsets[i]`` of ``mapping``."""

    def __init__(self, path: str, kind: str, entries: Sequence[tuple[str, float]]) -> None:
        self.name = os.path.join(
            path, f"{kind}_{OWN_INFIX}_{os.getpid()}_{secrets.token_hex(4)}.db"
        )
        self._write(entries)

    def replace(self, entries: Sequence[tuple[str, float]]) -> None:
        """Hold more series: a new file renamed over this one's name, so that a scrape reads
        one or the other, never both. Views of the old mapping stay valid but are not read."""
        previous = self.descriptor
        self._write(entries)
        os.close(previous)

    def _write(self, entries: Sequence[tuple[str, float]]) -> None:
        data, self.offsets = encode(entries)
        temporary = f"{self.name}.{secrets.token_hex(4)}.tmp"  # not *.db: no scrape reads it
        descriptor = os.open(temporary, _open_flags(os.O_RDWR | os.O_CREAT | os.O_EXCL), 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write_all(descriptor, data)
            self.mapping = mmap.mmap(descriptor, len(data))
            os.rename(temporary, self.name)
        except BaseException:
            os.close(descriptor)
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise
        self.descriptor = descriptor

    def close(self) -> None:
        """Drop this process's hold on the file (a forked child drops its parent's)."""
        with contextlib.suppress(OSError):
            os.close(self.descriptor)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


# -- reading for a scrape ---------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: str, operation: int, wait: float | None) -> Iterator[bool]:
    """The directory lock: yields whether it was taken (``wait`` None: block until it is)."""
    descriptor = os.open(os.path.join(path, LOCK_FILE), _open_flags(os.O_RDWR | os.O_CREAT), 0o600)
    try:
        if wait is None:
            fcntl.flock(descriptor, operation)
            yield True
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.002)
        yield True
    finally:
        os.close(descriptor)  # closing releases the lock


def _own_regular_file(descriptor: int) -> bool:
    info = os.fstat(descriptor)
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


def _read(file: str) -> bytes | None:
    """A metric file's bytes, or None if it is not a regular file of ours or is gone."""
    try:
        descriptor = os.open(file, _open_flags(os.O_RDONLY))
    except OSError:  # gone, or a symlink (ELOOP)
        return None
    with os.fdopen(descriptor, "rb") as stream:
        if not _own_regular_file(descriptor):
            return None
        return stream.read()


def read_files(path: str) -> list[tuple[str, bytes]]:
    """Every metric file's name and bytes, read under the shared lock (held only for this)."""
    try:
        lock = _locked(path, fcntl.LOCK_SH, wait=None)
        lock.__enter__()
    except OSError:  # the directory is gone or read-only: read what there is, if anything
        lock = None
    try:
        files = glob.glob(os.path.join(glob.escape(path), "*.db"))
        read = ((os.path.basename(file), _read(file)) for file in files)
        return [(name, data) for name, data in read if data]
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)


# -- folding ----------------------------------------------------------------------------------


def _is_dead_own_file(file: str) -> bool:
    """Its owner is gone iff we can take its lock (a live owner holds it exclusively)."""
    try:
        descriptor = os.open(file, _open_flags(os.O_RDONLY))
    except OSError:
        return False
    try:
        if not _own_regular_file(descriptor):
            return False
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prometheus_pid(name: str) -> int | None:
    """The pid of prometheus_client's ``{type}_{pid}.db`` (not ours, not an archive)."""
    stem = name.removesuffix(".db")
    kind, _, pid = stem.partition("_")
    return int(pid) if kind in ACCUMULATING and pid.isdigit() else None


def dead_files(path: str) -> list[str]:
    """Accumulating files whose process has ended: ours by their lock, prometheus_client's
    by their pid not running (even when told it died: a live process may have reused it)."""
    found = []
    for file in glob.glob(os.path.join(glob.escape(path), "*.db")):
        name = os.path.basename(file)
        if name.split("_", 1)[0] not in ACCUMULATING:
            continue
        if f"_{OWN_INFIX}_" in name:
            if _is_dead_own_file(file):
                found.append(file)
            continue
        pid = _prometheus_pid(name)
        if pid is not None and not _pid_alive(pid):
            found.append(file)
    return found


def fold(path: str, *, dead_pids: Iterable[int] = (), wait: float = 0.05) -> int | None:
    """Fold dead processes' files into the archives; the number folded, or None if the lock
    stayed busy for ``wait`` seconds (nothing changed: the next fold takes them)."""
    from prometheus_client.multiprocess import mark_process_dead

    dead_pids = list(dead_pids)
    with _locked(path, fcntl.LOCK_EX, wait) as taken:
        if not taken:
            return None
        for pid in dead_pids:
            if not _pid_alive(pid):
                mark_process_dead(pid, path)
        folded = 0
        dead = dead_files(path)
        for kind in ACCUMULATING:
            of_kind = [file for file in dead if os.path.basename(file).startswith(kind + "_")]
            if of_kind:
                _fold_kind(path, kind, of_kind)
                folded += len(of_kind)
        return folded


def fold_ended(path: str) -> None:
    """Fold the files of processes that ended, if there are any and the lock is free at once.

    Run as each worker starts and on each scrape, this keeps the files (and the scrape time)
    proportional to the live workers under servers without master hooks: uWSGI, uvicorn
    ``--workers``, hypercorn, granian. Never raises: folding is upkeep, and files not folded
    yet are counted all the same."""
    try:
        if dead_files(path):
            fold(path, wait=0.0)
    except Exception:
        logger.debug("boxkite-middleware: could not fold ended processes' files", exc_info=True)


def _fold_kind(path: str, kind: str, dead: list[str]) -> None:
    """Add the dead files into the archive, key by key: for counters, histograms (whose files
    hold each bucket's own count) and summaries the sum is exactly what a scrape adds up."""
    archive = os.path.join(path, f"{kind}_{ARCHIVE}.db")
    totals: dict[str, float] = {}
    for file in (archive, *dead):
        for key, value, _ in decode(_read(file) or b""):
            totals[key] = totals.get(key, 0.0) + value
    data, _ = encode(totals.items())
    temporary = f"{archive}.{secrets.token_hex(4)}.tmp"
    descriptor = os.open(temporary, _open_flags(os.O_WRONLY | os.O_CREAT | os.O_EXCL), 0o644)
    try:
        _write_all(descriptor, data)
    except BaseException:
        os.close(descriptor)
        os.remove(temporary)
        raise
    os.close(descriptor)
    os.rename(temporary, archive)
    for file in dead:
        with contextlib.suppress(FileNotFoundError):
            os.remove(file)


def wipe(path: str, *, only_dead: bool = True, published_before: float | None = None) -> int:
    """Remove what a previous run left: metric files whose process is gone, our temporary
    files, and baselines published before ``published_before`` (a preloaded app publishes
    its own before gunicorn's first hook). Regular files only, never recursively, and with
    ``only_dead`` never a live process's (another server may share the directory)."""
    removed = 0
    candidates = [
        *(file for pattern in PROMETHEUS_PATTERNS for file in _glob(path, pattern)),
        *_glob(path, "*.tmp"),
    ]
    for file in _glob(path, BASELINE_PREFIX + "*.json"):
        with contextlib.suppress(OSError):
            if published_before is None or os.lstat(file).st_mtime < published_before:
                candidates.append(file)
    for file in candidates:
        name = os.path.basename(file)
        if not _is_regular_file_of_ours(file):
            continue
        if only_dead and _is_live(name, file):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(file)
            removed += 1
    return removed


def _is_live(name: str, file: str) -> bool:
    """Ours by the lock; prometheus_client's by the pid in the name (this process's count as
    dead: it is the one starting over)."""
    if f"_{OWN_INFIX}_" in name and name.endswith(".db"):
        return not _is_dead_own_file(file)
    pid = _prometheus_pid(name) or _gauge_pid(name)
    return pid is not None and pid != os.getpid() and _pid_alive(pid)


def _glob(path: str, pattern: str) -> list[str]:
    return glob.glob(os.path.join(glob.escape(path), pattern))


def _gauge_pid(name: str) -> int | None:
    parts = name.removesuffix(".db").split("_")
    return int(parts[2]) if parts[0] == "gauge" and len(parts) == 3 and parts[2].isdigit() else None


def _is_regular_file_of_ours(file: str) -> bool:
    try:
        info = os.lstat(file)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


# -- baselines, for whichever process serves the scrape ---------------------------------------


def write_baseline(path: str, document: dict[str, Any]) -> None:
    """Publish a baseline (its file text and labels) so that a process that never loaded it,
    such as gunicorn's master serving a separate metrics port, can expose it."""
    text = json.dumps(document, sort_keys=True)
    name = hashlib.sha256(text.encode()).hexdigest()[:16]
    file = os.path.join(path, f"{BASELINE_PREFIX}{name}.json")
    temporary = f"{file}.{secrets.token_hex(4)}.tmp"
    descriptor = os.open(temporary, _open_flags(os.O_WRONLY | os.O_CREAT | os.O_EXCL), 0o644)
    try:
        _write_all(descriptor, text.encode())
    finally:
        os.close(descriptor)
    os.rename(temporary, file)


def published_baselines(path: str) -> list[tuple[str, int]]:
    """Each published baseline's file and its version (``st_mtime_ns``): enough to tell,
    without reading it, whether a baseline already parsed has changed."""
    found = []
    for file in sorted(_glob(path, BASELINE_PREFIX + "*.json")):
        with contextlib.suppress(OSError):
            found.append((file, os.lstat(file).st_mtime_ns))
    return found


def read_baseline(file: str) -> dict[str, Any] | None:
    data = _read(file)
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None
