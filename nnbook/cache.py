"""An on-disk cache with atomic, checksummed writes and one builder per entry, keyed by configuration and code.

Trained baselines and generated data sets are expensive to rebuild, so chapters
store them here.  Four properties make an entry trustworthy:

* **The key covers the configuration and the code.**  An entry is stored under
  ``<name>-<key>.pt``, where ``<key>`` hashes three things: the configuration (seed,
  epochs, architecture: :func:`config_key`), the code of the function that builds
  the entry (:func:`code_key`), and the source of the ``nnbook`` package itself.  So a
  changed setting, an edited training function in a chapter, or an edited ``nnbook``
  function never reads an entry built by the old one: the entry is built afresh
  under a new key (the old file stays until the folder is deleted).  What exactly the
  code part covers, and what it does not, is spelled out below.
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

The folder is ``$NNBOOK_CACHE`` when set, else ``~/.cache/nnbook``; delete it to
start from scratch.  ``NNBOOK_CACHE=off`` (any case) switches the cache off:
:func:`cached` then builds every entry afresh and stores nothing (no folder, no
file, no lock), and :func:`cache_dir` raises ``RuntimeError`` (a folder literally
called ``off`` is still reachable as ``./off``).

What the code part of the key covers (:func:`code_key`).  It hashes the *compiled
code* of the builder — bytecode, constants (docstrings included), names, argument
layout, recursively through nested functions, lambdas and comprehensions — not the
text of its file: that code exists for every Python function (a lambda, a function
defined in a notebook cell or by ``exec``, which have no file to read) and it is the
code that actually runs (a file edited on disk but not re-imported still runs the
old code, and keeps the old key).  Comments, blank lines and moving a function do
not change it.  From the builder it follows:

* functions and classes (their methods, properties, class constants and bases)
  that its code names as globals, holds in closure cells, or takes as default or
  :func:`functools.partial` arguments — recursively, as long as they are defined
  in the *same module* as the builder (for a chapter: the notebook, ``__main__``), or
  in a module listed in ``depends_on``;
* the plain constants it reaches the same way: ``None``, booleans, numbers,
  strings, bytes, and tuples or frozensets of them (so ``EPOCHS = 30`` at the top of a
  chapter, a loop variable, a ``partial(train, epochs=3)`` are part of the key);
* for a :func:`functools.partial`, its function and arguments; for a bound method,
  its function; for an object with ``__call__``, its class;
* for a module in ``depends_on``: every function and class defined in it and its
  plain module-level constants (as loaded, like the builder).

The limits.  Code *outside* these — a function reached only as a module attribute
(``helpers.train()``) or defined in another module, a method found at run time on an
object, the standard library, PyTorch and every other installed package (an upgrade
is not noticed) — is named in the key, not hashed: list such functions or modules in
``depends_on`` to cover them.  Mutable or large data — lists, dicts, sets, tensors,
models, data sets, tuples of more than 10,000 items — is not hashed either (only its
type is), since it may change as the builder runs: such values belong in the
configuration.  ``nnbook``'s own code is covered as a whole instead: the SHA-256 of
every ``.py`` file of the package, read once when :mod:`nnbook.cache` is imported (any
edit, even a comment, rebuilds every entry; restart the kernel after editing
``nnbook``, which the edited code needs anyway — an ``importlib.reload`` is not
noticed).  The files in ``nnbook/resources`` are data, not code, and not hashed.
Bytecode differs between Python versions, so each Python version builds its own
entries.  ``refresh=True`` or ``NNBOOK_CACHE=off`` rebuild regardless.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import os
import re
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["cache_dir", "enabled", "config_key", "code_key", "entry_path", "atomic_save", "save_verified",
           "load_verified", "cached", "clean_stale_temporaries", "CacheCorrupt"]

_TMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")   # .<target name>.<writer pid>.<random>.tmp
STALE_AFTER_S = 3600.0                # a temporary file this old is removed even if its writer's pid is alive
MAX_ITEMS = 10_000                    # a tuple or frozenset longer than this is keyed by its length only


class CacheCorrupt(ValueError):
    """A cache entry whose bytes do not match its stored SHA-256 (or that has none)."""


def enabled() -> bool:
    """``False`` when the cache is switched off by ``NNBOOK_CACHE=off`` (any case, surrounding spaces ignored).

    Examples:
        >>> import os
        >>> saved = os.environ.get("NNBOOK_CACHE")
        >>> os.environ["NNBOOK_CACHE"] = "off"
        >>> enabled()
        False
        >>> if saved is None: del os.environ["NNBOOK_CACHE"]
        ... else: os.environ["NNBOOK_CACHE"] = saved
    """
    return os.environ.get("NNBOOK_CACHE", "").strip().lower() != "off"


def cache_dir() -> Path:
    """Return (and create) the cache folder: ``$NNBOOK_CACHE`` or ``~/.cache/nnbook``.

    Raises:
        RuntimeError: the cache is switched off (``NNBOOK_CACHE=off``): there is no folder.
        NotADirectoryError: the path exists and is not a folder.
    """
    if not enabled():
        raise RuntimeError("cache_dir: the cache is switched off (NNBOOK_CACHE=off), so there is no cache folder; "
                           "unset NNBOOK_CACHE or set it to a folder")
    path = Path(os.environ.get("NNBOOK_CACHE") or Path.home() / ".cache" / "nnbook")
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"cache_dir: the cache folder {str(path)!r} exists but is not a folder "
                                 f"(set NNBOOK_CACHE to a folder)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _given(value: Any) -> str:
    """A short description of a value for an error message (as ``nnbook._checks``, without importing torch)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return repr(value)
    return f"a {type(value).__name__}"


def _config_text(config: dict, where: str) -> str:
    """The canonical JSON text of a configuration (sorted keys, no spaces), checked."""
    if not isinstance(config, dict):
        raise TypeError(f"{where}: config must be a dict, got {_given(config)}")
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"{where}: config must hold only JSON values (str, int, float, bool, None, lists, "
                        f"dicts), got {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where}: config must not hold NaN or infinity, got {exc}") from None


def config_key(config: dict) -> str:
    """Return a short, stable hash (16 hex characters) of a JSON-serializable configuration.

    This is the configuration's part of an entry's key; :func:`cached` adds the code's
    (:func:`code_key`) and ``nnbook``'s.

    Raises:
        TypeError: ``config`` is not a dict, or holds values JSON cannot encode.
        ValueError: ``config`` holds NaN or infinity (not valid JSON, and NaN != NaN).

    Examples:
        >>> config_key({"seed": 0, "epochs": 3}) == config_key({"epochs": 3, "seed": 0})
        True
        >>> len(config_key({}))
        16
    """
    return hashlib.sha256(_config_text(config, "config_key").encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the code part of the key
def _update(h, *parts: Any) -> None:
    """Feed length-prefixed parts into a hash (so that no two sequences of parts collide)."""
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode("utf-8", "surrogatepass")
        h.update(b"%d:" % len(data))
        h.update(data)


_SCALARS = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis))


def _plain(value: Any, depth: int = 0) -> str | None:
    """A canonical text of plain immutable data (scalars, tuples and frozensets of them), else ``None``."""
    kind = type(value)
    if kind in _SCALARS:
        return f"{kind.__name__}:{value!r}"
    if kind is tuple or kind is frozenset:
        if len(value) > MAX_ITEMS or depth > 50:
            return f"{kind.__name__}:len={len(value)}"
        items = [_plain(v, depth + 1) for v in value]
        if any(i is None for i in items):
            return None
        if kind is frozenset:
            items.sort()   # a frozenset's order depends on the hash seed of the process
        return f"{kind.__name__}:{len(items)}:[" + "\x1f".join(items) + "]"
    return None


def _const(value: Any) -> str:
    """A canonical text of a code object's constant (numbers, strings, tuples, frozensets, code objects)."""
    if isinstance(value, types.CodeType):
        return "code:" + _code_digest(value)
    if type(value) is tuple:
        return f"tuple:{len(value)}:[" + "\x1f".join(_const(v) for v in value) + "]"
    if type(value) is frozenset:
        return f"frozenset:{len(value)}:[" + "\x1f".join(sorted(_const(v) for v in value)) + "]"
    return f"{type(value).__name__}:{value!r}"


def _code_digest(code: types.CodeType) -> str:
    """SHA-256 of what a code object does: bytecode, constants, names and argument layout.

    File name, line numbers and column positions are left out, so moving a function or
    editing a comment does not change it.
    """
    return _code_digest_memo(code, getattr(code, "co_qualname", code.co_name))


@functools.lru_cache(maxsize=8192)
def _code_digest_memo(code: types.CodeType, qualname: str) -> str:
    # memoized on the code object and its qualified name: code objects compare equal
    # without looking at co_qualname, which the digest includes
    h = hashlib.sha256()
    _update(h, code.co_name, qualname, code.co_argcount,
            code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags, code.co_code,
            getattr(code, "co_exceptiontable", b""), "\x1f".join(code.co_names), "\x1f".join(code.co_varnames),
            "\x1f".join(code.co_freevars), "\x1f".join(code.co_cellvars), len(code.co_consts))
    for c in code.co_consts:
        _update(h, _const(c))
    return h.hexdigest()


def _global_names(code: types.CodeType) -> list[str]:
    """Every name a code object (and the code nested in it) may look up as a global, in a stable order."""
    names: dict[str, None] = {}
    stack = [code]
    while stack:
        co = stack.pop()
        names.update(dict.fromkeys(co.co_names))
        stack.extend(c for c in reversed(co.co_consts) if isinstance(c, types.CodeType))
    return list(names)


def _module_of(obj: Any) -> str | None:
    """The module that defines ``obj`` (a partial's or method's function; a callable object's class)."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.ismethod(obj):
        obj = obj.__func__
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if not isinstance(obj, (types.FunctionType, type)) and callable(obj):
        obj = type(obj)
    return getattr(obj, "__module__", None)


class _Fingerprint:
    """Walk code from its roots (see the module docstring: what the code part of the key covers)."""

    def __init__(self, roots: Iterable[Any]):
        roots = list(roots)
        self.homes = {_module_of(r) for r in roots}   # functions defined in these modules are followed
        self.hash = hashlib.sha256()
        self.seen: set[int] = set()
        self.alive: list[Any] = []                   # keeps walked objects alive, so no id is reused
        for r in roots:
            self.emit("root")
            self.code(r)

    def emit(self, *parts: Any) -> None:
        _update(self.hash, *parts)

    def first_visit(self, obj: Any) -> bool:
        if id(obj) in self.seen:
            self.emit("seen", getattr(obj, "__module__", ""), getattr(obj, "__qualname__", ""))
            return False
        self.seen.add(id(obj))
        self.alive.append(obj)
        return True

    def value(self, value: Any) -> None:
        """Something the walked code reaches: plain data is hashed, code followed if it is at home, else named."""
        text = _plain(value)
        if text is not None:
            self.emit("plain", text)
        elif isinstance(value, types.ModuleType):
            self.emit("module", value.__name__)
        elif isinstance(value, (functools.partial, types.MethodType, staticmethod, classmethod, property)):
            self.code(value)
        elif isinstance(value, (types.FunctionType, type)):
            if value.__module__ in self.homes:
                self.code(value)
            else:
                self.emit("ref", value.__module__, value.__qualname__)
        elif callable(value) and type(value).__module__ in self.homes:
            self.emit("instance")
            self.code(type(value))
        else:
            self.emit("object", type(value).__module__, type(value).__qualname__)

    def code(self, obj: Any) -> None:
        """Hash ``obj``'s own code and follow what it reaches."""
        if isinstance(obj, functools.partial):
            self.emit("partial", len(obj.args), len(obj.keywords))
            self.value(obj.func)
            for a in obj.args:
                self.value(a)
            for k in sorted(obj.keywords):
                self.emit(k)
                self.value(obj.keywords[k])
        elif isinstance(obj, types.MethodType):
            self.emit("method")
            self.code(obj.__func__)
            owner = obj.__self__ if isinstance(obj.__self__, type) else type(obj.__self__)
            self.value(owner)
        elif isinstance(obj, (staticmethod, classmethod)):
            self.emit(type(obj).__name__)
            self.code(obj.__func__)
        elif isinstance(obj, property):
            self.emit("property")
            for f in (obj.fget, obj.fset, obj.fdel):
                if f is None:
                    self.emit("none")
                else:
                    self.code(f)
        elif isinstance(obj, types.FunctionType):
            self.function(obj)
        elif isinstance(obj, type):
            self.cls(obj)
        elif isinstance(obj, types.ModuleType):
            self.module(obj)
        elif isinstance(obj, (types.BuiltinFunctionType, types.MethodWrapperType, types.WrapperDescriptorType,
                              types.MethodDescriptorType, types.ClassMethodDescriptorType)):
            self.emit("builtin", getattr(obj, "__module__", None), getattr(obj, "__qualname__", repr(obj)))
        elif callable(obj):
            self.emit("instance")
            self.code(type(obj))
        else:  # pragma: no cover - code_key and cached refuse anything else
            self.emit("object", type(obj).__module__, type(obj).__qualname__)

    def function(self, fn: types.FunctionType) -> None:
        if not self.first_visit(fn):
            return
        code = fn.__code__
        self.emit("function", fn.__module__, fn.__qualname__, _code_digest(code))
        for d in fn.__defaults__ or ():
            self.value(d)
        for k in sorted(fn.__kwdefaults__ or {}):
            self.emit(k)
            self.value(fn.__kwdefaults__[k])
        for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
            self.emit("cell", name)
            try:
                contents = cell.cell_contents
            except ValueError:   # an empty cell (a name the enclosing function assigns later)
                self.emit("empty")
            else:
                self.value(contents)
        g = fn.__globals__
        for name in _global_names(code):
            if name in g:
                self.emit("global", name)
                self.value(g[name])
        wrapped = getattr(fn, "__wrapped__", None)   # a decorated function: its real body
        if isinstance(wrapped, types.FunctionType):
            self.emit("wrapped")
            self.code(wrapped)

    def cls(self, cls: type) -> None:
        if not self.first_visit(cls):
            return
        self.emit("class", cls.__module__, cls.__qualname__, len(cls.__bases__))
        for base in cls.__bases__:
            self.value(base)
        for name, attr in sorted(vars(cls).items()):
            if isinstance(attr, (types.FunctionType, staticmethod, classmethod, property)):
                self.emit(name)
                self.code(attr)
            elif isinstance(attr, type):
                self.emit(name)
                self.value(attr)
            else:
                text = _plain(attr)
                if text is not None:
                    self.emit(name, text)

    def module(self, module: types.ModuleType) -> None:
        if not self.first_visit(module):
            return
        self.emit("module", module.__name__)
        for name, v in sorted(vars(module).items()):
            if name.startswith("__") and name.endswith("__"):   # __file__, __spec__, ...: where, not what
                continue
            if isinstance(v, (types.FunctionType, type)) and v.__module__ == module.__name__:
                self.emit(name)
                self.code(v)
            else:
                text = _plain(v)
                if text is not None:
                    self.emit(name, text)


def _check_code(objects: Iterable[Any], where: str, name: str) -> list[Any]:
    out = []
    for i, obj in enumerate(objects):
        if not (callable(obj) or isinstance(obj, types.ModuleType)):
            raise TypeError(f"{where}: {name}[{i}] must be a function, class, module or other callable, "
                            f"got {_given(obj)}")
        out.append(obj)
    return out


def _code_digest_of(objects: Iterable[Any]) -> str:
    return _Fingerprint(objects).hash.hexdigest()


def code_key(*objects: Any) -> str:
    """Return a short hash (16 hex characters) of the code of functions, classes or modules.

    The hash covers the compiled code of each object and the code and plain constants
    it reaches in its own module; the module docstring says exactly what is covered
    and what is not.  It is the same in every process that loads the same code with
    the same Python version.

    Raises:
        TypeError: an object is neither callable nor a module.

    Examples:
        >>> ns = {"__name__": "demo"}
        >>> exec("def train(): return 1", ns)
        >>> before = code_key(ns["train"])
        >>> exec("def train():  # a comment is not code\\n    return 1", ns)
        >>> code_key(ns["train"]) == before
        True
        >>> exec("def train(): return 2", ns)
        >>> code_key(ns["train"]) == before
        False
    """
    return _code_digest_of(_check_code(objects, "code_key", "objects"))[:16]


def _package_fingerprint(folder: Path) -> str:
    """SHA-256 of every ``.py`` file under ``folder`` (relative paths and bytes), ``__pycache__`` excluded."""
    h = hashlib.sha256()
    files = sorted((p for p in folder.rglob("*.py") if "__pycache__" not in p.relative_to(folder).parts),
                   key=lambda p: p.relative_to(folder).as_posix())
    for p in files:
        try:
            data = p.read_bytes()
        except OSError:
            data = b"<unreadable>"
        _update(h, p.relative_to(folder).as_posix(), data)
    return h.hexdigest()


# nnbook's own code, read once at import (when the rest of nnbook is imported too): see the module docstring.
_NNBOOK_CODE = _package_fingerprint(Path(__file__).resolve().parent)


def _check_entry(name: Any, build: Any, depends_on: Any, where: str) -> list[Any]:
    if not isinstance(name, str) or not name or os.sep in name or "/" in name or name.startswith(".") \
            or "\0" in name:
        raise ValueError(f"{where}: name must be a non-empty file-name-safe string, got {name!r}")
    if not callable(build):
        raise TypeError(f"{where}: build must be callable, got {_given(build)}")
    if not isinstance(depends_on, (list, tuple)):
        raise TypeError(f"{where}: depends_on must be a list or tuple of functions, classes or modules, "
                        f"got {_given(depends_on)}")
    return _check_code(depends_on, where, "depends_on")


def _entry_path(folder: Path, name: str, config_text: str, build: Callable, depends_on: list) -> Path:
    h = hashlib.sha256()
    _update(h, "nnbook-cache-key/2", config_text, _code_digest_of([build, *depends_on]), _NNBOOK_CODE)
    return folder / f"{name}-{h.hexdigest()[:16]}.pt"


def entry_path(name: str, config: dict, build: Callable[[], Any], *, depends_on: list | tuple = ()) -> Path:
    """The file in which :func:`cached` stores the entry of ``name``, ``config``, ``build`` and ``depends_on``.

    Its name is ``<name>-<key>.pt``, the key hashing the configuration, the code of
    ``build`` and ``depends_on`` (:func:`code_key`) and the source of ``nnbook``.

    Raises:
        RuntimeError: the cache is switched off (``NNBOOK_CACHE=off``).
        ValueError, TypeError: as :func:`cached`.
    """
    depends_on = _check_entry(name, build, depends_on, "entry_path")
    text = _config_text(config, "entry_path")
    if not enabled():
        raise RuntimeError("entry_path: the cache is switched off (NNBOOK_CACHE=off), so no entry has a file")
    return _entry_path(cache_dir(), name, text, build, depends_on)


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
        The number of files removed (0 when ``folder`` is not given and the cache is
        switched off by ``NNBOOK_CACHE=off``: then there is no folder to clean).
    """
    if folder is None and not enabled():
        return 0
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


def cached(name: str, config: dict, build: Callable[[], Any], *, refresh: bool = False,
           depends_on: list | tuple = ()) -> Any:
    """Return the object cached under ``name``, ``config`` and the code of ``build``, building it on a miss.

    The entry's file is :func:`entry_path`: ``<name>-<key>.pt``, where the key hashes
    the configuration, the code of ``build`` and of ``depends_on`` (:func:`code_key`)
    and the source of ``nnbook``, so an edited builder — or an edited function it
    calls from the same notebook or module, or an edited ``nnbook`` — builds a new
    entry instead of returning the old one (the module docstring lists what the code
    part covers and what it does not).

    A valid entry is read without locking (writes are atomic).  On a miss — no entry,
    a damaged entry, or ``refresh`` — the per-entry lock ``<entry>.pt.lock`` is taken,
    stale temporary files are removed, the entry is checked again (another process
    may have built it meanwhile), and only then is ``build()`` called and its result
    saved with :func:`save_verified`.  With ``NNBOOK_CACHE=off`` every call builds
    afresh and nothing is read or written.

    Args:
        name: a short file-name-safe label, such as ``"mnist1d"`` or ``"digits_cnn"``.
        config: everything the built object depends on that is not code (JSON values
            only: seeds, sizes, hyper-parameters, which data); its hash is part of the key.
        build: a function of no arguments that builds the object (tensors, dicts of
            tensors, state dicts, ... anything :func:`torch.save` can store).  Its code,
            and the code and plain constants it reaches in its own module, are part of
            the key.
        refresh: rebuild even when a valid entry exists.
        depends_on: more code the entry depends on that the key would not cover
            otherwise — functions, classes or modules (a helper module the builder
            calls as ``helpers.train()``, a function from another module).  A module
            contributes every function and class defined in it and its plain
            constants, and the builder's own walk also follows functions and classes
            defined in those modules.

    Returns:
        The cached or freshly built object.  A damaged entry (checksum mismatch,
        truncation, unreadable) is rebuilt and overwritten, never returned.

    Raises:
        ValueError: ``name`` is empty or not file-name-safe; ``config`` holds NaN or infinity.
        TypeError: ``build`` is not callable, ``refresh`` not a bool, ``depends_on`` not
            a list or tuple of functions, classes or modules, or ``config`` not a dict
            of JSON values.
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
        >>> cached("doctest-demo", {"n": 3}, build), len(calls)       # read back, not built again
        ([1, 2, 3], 1)
        >>> def build():                                              # the builder edited
        ...     calls.append(1)
        ...     return [1, 2, 3, 4]
        >>> cached("doctest-demo", {"n": 3}, build), len(calls)       # a new key: built afresh
        ([1, 2, 3, 4], 2)
        >>> os.environ["NNBOOK_CACHE"] = "off"                        # build every time, store nothing
        >>> cached("doctest-demo", {"n": 3}, build), len(calls)
        ([1, 2, 3, 4], 3)
        >>> if saved is None: del os.environ["NNBOOK_CACHE"]
        ... else: os.environ["NNBOOK_CACHE"] = saved
    """
    depends_on = _check_entry(name, build, depends_on, "cached")
    if not isinstance(refresh, bool):
        raise TypeError(f"cached: refresh must be True or False, got {_given(refresh)}")
    text = _config_text(config, "cached")
    if not enabled():
        return build()

    from filelock import FileLock

    folder = cache_dir()
    path = _entry_path(folder, name, text, build, depends_on)

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
