"""An on-disk cache with atomic writes, keyed by configuration.

Trained baselines and generated data sets are expensive to rebuild, so chapters
store them here.  Every write goes to a temporary file in the same folder and is
then renamed over the target with :func:`os.replace`, which is atomic on POSIX
and Windows: an interrupted run leaves either the old file or the new one,
never a truncated one.  Entries are keyed by a hash of their configuration, so a
changed setting (seed, epochs, architecture) never reads a stale entry.

The folder is ``$NNBOOK_CACHE`` when set, else ``~/.cache/nnbook``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def cache_dir() -> Path:
    """Return (and create) the cache folder: ``$NNBOOK_CACHE`` or ``~/.cache/nnbook``."""
    path = Path(os.environ.get("NNBOOK_CACHE") or Path.home() / ".cache" / "nnbook")
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_key(config: dict) -> str:
    """Return a short, stable hash (16 hex characters) of a JSON-serializable configuration.

    Raises:
        TypeError: ``config`` is not a dict, or holds values JSON cannot encode.
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    try:
        text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise TypeError(f"config must hold only JSON values (str, int, float, bool, None, lists, dicts): {exc}") from None
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """Save ``obj`` with :func:`torch.save` to ``path`` atomically (temporary file, then rename).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
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


def cached(name: str, config: dict, build: Callable[[], Any], *, refresh: bool = False) -> Any:
    """Return the object cached under ``name`` and ``config``, building and saving it on a miss.

    Args:
        name: a short file-name-safe label, such as ``"mnist1d"`` or ``"digits_cnn"``.
        config: everything the built object depends on (JSON values only); its hash
            is part of the file name.
        build: a function of no arguments that builds the object (tensors, dicts of
            tensors, state dicts, ... anything :func:`torch.save` can store).
        refresh: rebuild even when an entry exists.

    Returns:
        The cached or freshly built object.  A corrupt entry (say, written by an older
        version of this code without atomic writes) is rebuilt, not trusted.

    Raises:
        ValueError: ``name`` is empty or contains a path separator.
        TypeError: ``build`` is not callable, or ``config`` is not JSON-serializable.
    """
    if not isinstance(name, str) or not name or os.sep in name or "/" in name:
        raise ValueError(f"name must be a non-empty file-name-safe string, got {name!r}")
    if not callable(build):
        raise TypeError(f"build must be callable, got {type(build).__name__}")
    path = cache_dir() / f"{name}-{config_key(config)}.pt"
    if path.exists() and not refresh:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # corrupt or unreadable: rebuild below
            pass
    obj = build()
    atomic_save(obj, path)
    return obj
