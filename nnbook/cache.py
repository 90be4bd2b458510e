"""An on-disk cache with atomic, checksummed writes and one builder per entry, keyed by configuration.

Trained baselines and generated data sets are expensive to rebuild, so chapters
store them here.  Three properties make an entry trustworthy:

* **Atomic writes.** Every write goes to a temporary file in the same folder and is
  then renamed over the target with :func:`os.replace`, which is atomic on POSIX
  and Windows: an interrupted run leaves either the old file or the new one, never
  a truncated one.  Temporary files left behind by a writer that was killed are
  removed by the next :func:`cached` call (:func:`clean_stale_temporaries`).
* **Checksums.** Next to each entry ``<entry>.pt`` (a plain :func:`torch.save` file)
  :func:`cached` stores ``<entry>.pt.sha256``, the SHA-256 of its bytes.  An entry
  whose bytes do not match — flipped bytes, truncation, a missing checksum (a file
  from an older version of this module) — is not trusted: it is rebuilt and
  overwritten.
* **One builder.** :func:`cached` takes a per-entry file lock (the maintained
  ``filelock`` package) before building, so concurrent processes that miss the same
  entry build it once: the others wait and then read it.

Entries are keyed by a hash of their configuration, so a changed setting (seed,
epochs, architecture) never reads a stale entry.  The folder is ``$NNBOOK_CACHE``
when set, else ``~/.cache/nnbook``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["cache_dir", "config_key", "atomic_save", "save_verified", "load_verified", "cached", "clean_stale_temporaries",
           "CacheCorrupt"]

_TMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")   # .<target name>.<writer pid>.<random>.tmp
STALE_AFTER_S = 3600.0                # a temporary file this old is removed even if its writer's pid is alive


class CacheCorrupt(ValueError):
    """A cache entry whose bytes do not match its stored SHA-256 (or that has none)."""


def cache_dir() -> Path:
    """Return (and create) the cache folder: ``$NNBOOK_CACHE`` or ``~/.cache/nnbook``.

    Raises:
        NotADirectoryError: the path exists and is not a folder.
    """
    path = Path(os.environ.get("NNBOOK_CACHE") or Path.home() / ".cache" / "nnbook")
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"cache_dir: the cache folder {str(path)!r} exists but is not a folder "
                                 f"(set NNBOOK_CACHE to a folder)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_key(config: dict) -> str:
    """Return a short, stable hash (16 hex characters) of a JSON-serializable configuration.

    Raises:
        TypeError: ``config`` is not a dict, or holds values JSON cannot encode.
        ValueError: ``config`` holds NaN or infinity (not valid JSON, and NaN != NaN).

    Examples:
        >>> config_key({"seed": 0, "epochs": 3}) == config_key({"epochs": 3, "seed": 0})
        True
        >>> len(config_key({}))
        16
    """
    if not isinstance(config, dict):
        raise TypeError(f"config_key: config must be a dict, got a {type(config).__name__}")
    try:
        text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"config_key: config must hold only JSON values (str, int, float, bool, None, lists, "
                        f"dicts): {exc}") from None
    except ValueError as exc:
        raise ValueError(f"config_key: config must not hold NaN or infinity: {exc}") from None
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _serialize(obj: Any) -> bytes:
    import torch  # imported here so that the cache's bookkeeping does not need torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _deserialize(data: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def _atomic_write_bytes(data: bytes, path: Path) -> Path:
    """Write ``data`` to a temporary file ``.<name>.<pid>.<random>.tmp`` beside ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """Save ``obj`` with :func:`torch.save` to ``path`` atomically (temporary file, then rename).

    The object is serialized in memory first, written to a temporary file
    ``.<name>.<pid>.<random>.tmp`` in the same folder, flushed to disk, then renamed
    over ``path``; if anything fails the temporary file is removed and an existing
    ``path`` is left intact.

    Returns:
        The path written.

    Examples:
        >>> import tempfile, pathlib, torch
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = atomic_save({"a": 1}, pathlib.Path(d) / "x.pt")
        ...     torch.load(p)
        {'a': 1}
    """
    return _atomic_write_bytes(_serialize(obj), Path(path))


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_verified(obj: Any, path: str | os.PathLike) -> Path:
    """:func:`atomic_save` plus the SHA-256 of the file's bytes in ``<path>.sha256`` (also atomic).

    The checksum is written after the data, so a reader between the two renames (or
    after a writer was killed between them) sees a mismatch and treats the entry as
    damaged, never the reverse.

    Returns:
        The path of the data file.
    """
    path = Path(path)
    data = _serialize(obj)
    _atomic_write_bytes(data, path)
    _atomic_write_bytes(hashlib.sha256(data).hexdigest().encode() + b"\n", _digest_path(path))
    return path


def load_verified(path: str | os.PathLike) -> Any:
    """Load a file written by :func:`save_verified`, after checking its SHA-256.

    Raises:
        FileNotFoundError: no such file.
        CacheCorrupt: no checksum file, or the bytes do not match it (flipped bytes,
            truncation, a file written by something else).

    Examples:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = save_verified([1, 2], pathlib.Path(d) / "x.pt")
        ...     load_verified(p)
        [1, 2]
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        stored = _digest_path(path).read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        raise CacheCorrupt(f"load_verified: {str(path)!r} has no checksum file {_digest_path(path).name!r}") from None
    actual = hashlib.sha256(data).hexdigest()
    if stored != actual:
        raise CacheCorrupt(f"load_verified: {str(path)!r} is damaged: its SHA-256 is {actual[:12]}..., "
                           f"the stored checksum is {stored[:12]!r}...")
    return _deserialize(data)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike | None = None, max_age_s: float = STALE_AFTER_S) -> int:
    """Remove temporary files left by writers that died (killed during :func:`atomic_save`).

    A temporary file is stale when the process that wrote it no longer exists (its
    pid is part of the name), or when it is older than ``max_age_s`` seconds.

    Returns:
        The number of files removed.
    """
    folder = Path(folder) if folder is not None else cache_dir()
    removed = 0
    now = time.time()
    for entry in folder.iterdir():
        m = _TMP.match(entry.name)
        if not m or not entry.is_file():
            continue
        try:
            if not _pid_alive(int(m.group(1))) or now - entry.stat().st_mtime > max_age_s:
                entry.unlink()
                removed += 1
        except FileNotFoundError:  # another process cleaned it first
            pass
    return removed


def cached(name: str, config: dict, build: Callable[[], Any], *, refresh: bool = False) -> Any:
    """Return the object cached under ``name`` and ``config``, building and saving it on a miss.

    A valid entry is read without locking (writes are atomic).  On a miss — no entry,
    a damaged entry, or ``refresh`` — the per-entry lock ``<entry>.pt.lock`` is taken,
    stale temporary files are removed, the entry is checked again (another process
    may have built it meanwhile), and only then is ``build()`` called and its result
    saved with :func:`save_verified`.

    Args:
        name: a short file-name-safe label, such as ``"mnist1d"`` or ``"digits_cnn"``.
        config: everything the built object depends on (JSON values only); its hash
            is part of the file name.
        build: a function of no arguments that builds the object (tensors, dicts of
            tensors, state dicts, ... anything :func:`torch.save` can store).
        refresh: rebuild even when a valid entry exists.

    Returns:
        The cached or freshly built object.  A damaged entry (checksum mismatch,
        truncation, unreadable) is rebuilt and overwritten, never returned.

    Raises:
        ValueError: ``name`` is empty or not file-name-safe.
        TypeError: ``build`` is not callable, ``refresh`` not a bool, or ``config`` is
            not JSON-serializable.
        NotADirectoryError: the cache folder is a file.

    Examples:
        >>> import os, tempfile
        >>> saved = os.environ.get("NNBOOK_CACHE")
        >>> os.environ["NNBOOK_CACHE"] = tempfile.mkdtemp()   # a private folder for this example
        >>> calls = []
        >>> def build():
        ...     calls.append(1)
        ...     return [1, 2, 3]
        >>> cached("doctest-demo", {"n": 3}, build, refresh=True)
        [1, 2, 3]
        >>> cached("doctest-demo", {"n": 3}, build), len(calls)
        ([1, 2, 3], 1)
        >>> if saved is None: del os.environ["NNBOOK_CACHE"]
        ... else: os.environ["NNBOOK_CACHE"] = saved
    """
    from filelock import FileLock

    if not isinstance(name, str) or not name or os.sep in name or "/" in name or name.startswith(".") \
            or "\0" in name:
        raise ValueError(f"cached: name must be a non-empty file-name-safe string, got {name!r}")
    if not callable(build):
        raise TypeError(f"cached: build must be callable, got a {type(build).__name__}")
    if not isinstance(refresh, bool):
        raise TypeError(f"cached: refresh must be True or False, got {refresh!r}")
    folder = cache_dir()
    path = folder / f"{name}-{config_key(config)}.pt"

    def read():
        try:
            return True, load_verified(path)
        except FileNotFoundError:
            return False, None
        except Exception:  # damaged or unreadable: rebuild under the lock
            return False, None

    if not refresh:
        ok, obj = read()
        if ok:
            return obj
    with FileLock(str(path) + ".lock"):
        clean_stale_temporaries(folder)
        if not refresh:
            ok, obj = read()  # built by another process while we waited for the lock
            if ok:
                return obj
        obj = build()
        save_verified(obj, path)
    return obj
