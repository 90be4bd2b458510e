"""Cache integrity (issue 16): checksums, damaged entries rebuilt, stale temporaries removed, one builder;
and the key (configuration and code: an edited builder is rebuilt, an unchanged one is not) and NNBOOK_CACHE=off."""
import functools
import importlib
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from nnbook import cache

ROOT = Path(__file__).resolve().parent.parent
CACHE_PY = str(ROOT / "nnbook" / "cache.py")


def _entry(build, name="thing", config=None):
    path = cache.entry_path(name, config or {"k": 1}, build)
    return path, path.with_name(path.name + ".sha256")


def _build_counter(calls, value):
    box = {"value": value}   # a dict is not hashed into the key (a plain number would be)

    def build():             # so every builder made here has the same key, hence the same entry
        calls.append(1)
        if isinstance(box["value"], BaseException):
            raise box["value"]
        return box["value"]
    return build


def test_entry_has_a_sha256_that_matches_its_bytes():
    import hashlib

    build = _build_counter([], {"w": torch.arange(10.0)})
    cache.cached("thing", {"k": 1}, build)
    path, digest = _entry(build)
    assert digest.read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["flip1", "flip4096", "truncate", "empty", "append", "digest"])
def test_damaged_entry_is_detected_and_rebuilt(damage):
    value = {"w": torch.arange(20000.0)}
    calls = []
    cache.cached("thing", {"k": 1}, _build_counter(calls, value))
    path, digest = _entry(_build_counter(calls, value))
    data = bytearray(path.read_bytes())
    if damage == "flip1":
        data[len(data) // 2] ^= 0x01           # one bit inside the tensor data
    elif damage == "flip4096":
        start = len(data) // 3
        for i in range(start, start + 4096):
            data[i] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    elif damage == "append":
        data += b"junk"
    if damage == "digest":
        digest.write_text("0" * 64)
    else:
        path.write_bytes(bytes(data))
    with pytest.raises(cache.CacheCorrupt):
        cache.load_verified(path)
    got = cache.cached("thing", {"k": 1}, _build_counter(calls, value))
    assert torch.equal(got["w"], value["w"]) and len(calls) == 2      # rebuilt, not trusted
    assert torch.equal(cache.load_verified(path)["w"], value["w"])    # and the entry is whole again


def test_entry_without_checksum_is_rebuilt():
    build = _build_counter([], 42)
    path, digest = _entry(build)
    torch.save(41, path)               # e.g. written by an older nnbook: no checksum to verify
    assert cache.cached("thing", {"k": 1}, build) == 42
    assert digest.exists() and cache.load_verified(path) == 42


def test_stale_temporaries_are_cleaned():
    folder = cache.cache_dir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)       # a process that has exited
    stale = folder / f".thing-x.pt.{dead_pid}.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    old = folder / f".other.pt.{os.getpid()}.def456.tmp"   # our own pid, but older than the limit
    old.write_bytes(b"y")
    os.utime(old, (time.time() - 2 * cache.STALE_AFTER_S,) * 2)
    live = folder / f".live.pt.{os.getpid()}.ghi789.tmp"    # a write in progress in this process
    live.write_bytes(b"z")
    unrelated = folder / "notes.txt"
    unrelated.write_text("keep me")
    cache.cached("thing", {"k": 1}, lambda: 1)
    assert not stale.exists() and not old.exists() and live.exists() and unrelated.exists()


_KILLED_BUILD = 'def build():\n    return {"w": list(range(100000))}\n'   # the same entry in child and parent

_KILLED_WRITER = textwrap.dedent("""
    import importlib.util, os, pickle, sys, time
    spec = importlib.util.spec_from_file_location("cache", {cache_py!r})   # nnbook.cache alone: quick to start
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    cache._serialize, cache._deserialize = pickle.dumps, pickle.loads      # no torch import in the child

    def stalled_write(data, path):
        import tempfile
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{{path.name}}.{{os.getpid()}}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            print("WRITING", flush=True)
            time.sleep(60)        # killed here

    cache._atomic_write_bytes = stalled_write
    exec({build!r})
    cache.cached("thing", {{"k": 1}}, build)
""")


def test_killed_writer_leaves_no_entry_no_lock_and_no_lasting_temporary(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER.format(cache_py=CACHE_PY, build=_KILLED_BUILD))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    try:
        assert proc.stdout.readline().strip() == "WRITING"
        folder = cache.cache_dir()
        assert [p for p in folder.iterdir() if p.name.endswith(".tmp")]   # the partial file is there
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ns = {"__name__": "__main__"}
    exec(_KILLED_BUILD, ns)
    path, digest = _entry(ns["build"])                     # the entry (and lock) the writer was building
    assert not path.exists() and not digest.exists()     # nothing half-written was published
    t0 = time.time()
    assert cache.cached("thing", {"k": 1}, ns["build"])["w"][-1] == 99999   # the lock died with the writer
    assert time.time() - t0 < 10
    assert not [p for p in cache.cache_dir().iterdir() if p.name.endswith(".tmp")]   # cleaned up


_BUILDER = textwrap.dedent("""
    import importlib.util, os, pickle, sys, time
    spec = importlib.util.spec_from_file_location("cache", {cache_py!r})   # nnbook.cache alone: quick to start
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    cache._serialize, cache._deserialize = pickle.dumps, pickle.loads      # no torch import in the child

    def build():
        with open({log!r}, "a") as fh:
            fh.write(f"{{os.getpid()}}\\n")
        time.sleep(1.0)           # a slow build: the others arrive while it runs
        return {{"answer": 42}}

    print(cache.cached("shared", {{"k": 1}}, build)["answer"])
""")


def test_concurrent_builders_build_once(tmp_path):
    log = tmp_path / "builds.log"
    script = tmp_path / "builder.py"
    script.write_text(_BUILDER.format(cache_py=CACHE_PY, log=str(log)))
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ)) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == ["42"] * 3
    assert len(log.read_text().splitlines()) == 1     # one build; the other two waited and read it


def test_cache_dir_that_is_a_file_and_bad_arguments(tmp_path, monkeypatch):
    bad = tmp_path / "file"
    bad.write_text("x")
    monkeypatch.setenv("NNBOOK_CACHE", str(bad))
    with pytest.raises(NotADirectoryError, match="cache_dir: .*not a folder"):
        cache.cached("x", {}, lambda: 1)
    monkeypatch.setenv("NNBOOK_CACHE", str(tmp_path / "ok"))
    with pytest.raises(ValueError, match="cached: name"):
        cache.cached("", {}, lambda: 1)
    with pytest.raises(ValueError, match="cached: name"):
        cache.cached(".hidden", {}, lambda: 1)
    with pytest.raises(TypeError, match="cached: build"):
        cache.cached("x", {}, None)
    with pytest.raises(TypeError, match="cached: build must be callable, got None"):
        cache.cached("x", {}, None)
    with pytest.raises(TypeError, match="cached: refresh must be True or False, got 'yes'"):
        cache.cached("x", {}, lambda: 1, refresh="yes")
    with pytest.raises(TypeError, match="cached: config must be a dict, got a list"):
        cache.cached("x", [1], lambda: 1)
    with pytest.raises(TypeError, match="cached: config must hold only JSON values"):
        cache.cached("x", {"t": object()}, lambda: 1)
    with pytest.raises(ValueError, match="cached: config must not hold NaN"):
        cache.cached("x", {"lr": float("inf")}, lambda: 1)
    with pytest.raises(ValueError, match="config_key: config must not hold NaN"):
        cache.config_key({"lr": float("nan")})
    with pytest.raises(TypeError, match="config_key: config must be a dict, got 3"):
        cache.config_key(3)
    with pytest.raises(TypeError, match="cached: depends_on must be a list or tuple of functions, classes or "
                                        "modules, got a function"):
        cache.cached("x", {}, lambda: 1, depends_on=lambda: 2)   # one function, not a list
    with pytest.raises(TypeError, match=r"cached: depends_on\[1\] must be a function, class, module or other "
                                        r"callable, got 'torch'"):
        cache.cached("x", {}, lambda: 1, depends_on=[torch, "torch"])
    with pytest.raises(ValueError, match="entry_path: name"):
        cache.entry_path("a/b", {}, lambda: 1)
    with pytest.raises(TypeError, match="entry_path: config must be a dict, got None"):
        cache.entry_path("a", None, lambda: 1)
    with pytest.raises(TypeError, match=r"code_key: objects\[0\] must be a function, class, module or other "
                                        r"callable, got 3"):
        cache.code_key(3)
    assert not (tmp_path / "ok").exists()     # bad input is refused before anything touches the disk


def test_refresh_rebuilds_and_failed_build_keeps_old_entry():
    calls = []
    cache.cached("thing", {"k": 1}, _build_counter(calls, 1))
    assert cache.cached("thing", {"k": 1}, _build_counter(calls, 2), refresh=True) == 2 and len(calls) == 2
    boom = _build_counter(calls, RuntimeError("build failed"))     # the same code: the same entry
    with pytest.raises(RuntimeError, match="build failed"):
        cache.cached("thing", {"k": 1}, boom, refresh=True)
    assert cache.cached("thing", {"k": 1}, boom) == 2      # the old entry is intact and still valid
    assert len(calls) == 3


# --------------------------------------------------------------------------- the key: configuration and code
_MODULE = '''
LOG = {log!r}
{extra}
def build():
    with open(LOG, "a") as fh:
        fh.write({tag!r} + "\\n")
    return {tag!r}
'''


def _runs(log):
    return log.read_text().splitlines() if log.exists() else []


def test_edited_builder_in_a_module_file_is_rebuilt(tmp_path, monkeypatch):
    """The stale-cache case: edit the builder's source, re-import, call again: built afresh."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)   # every reload compiles the edited file
    monkeypatch.syspath_prepend(str(tmp_path))
    log, src = tmp_path / "runs.log", tmp_path / "nnbook_stale_demo.py"

    def write(tag, extra=""):
        src.write_text(_MODULE.format(log=str(log), tag=tag, extra=extra))

    write("v1")
    mod = importlib.import_module("nnbook_stale_demo")
    try:
        assert cache.cached("trained", {"seed": 0}, mod.build) == "v1" and _runs(log) == ["v1"]
        assert cache.cached("trained", {"seed": 0}, mod.build) == "v1" and _runs(log) == ["v1"]  # unchanged: read
        write("v2, edited")
        assert cache.cached("trained", {"seed": 0}, mod.build) == "v1"    # edited on disk, not re-imported:
        assert _runs(log) == ["v1"]                                        # the old code runs, the old key holds
        importlib.reload(mod)
        assert cache.cached("trained", {"seed": 0}, mod.build) == "v2, edited"        # rebuilt, new value
        assert _runs(log) == ["v1", "v2, edited"]
        assert cache.cached("trained", {"seed": 0}, mod.build) == "v2, edited" and len(_runs(log)) == 2
        write("v1", extra="# a comment, a blank line and a moved function are not code\n\n\n")
        importlib.reload(mod)
        assert cache.cached("trained", {"seed": 0}, mod.build) == "v1"    # the v1 entry again, not built
        assert len(_runs(log)) == 2
        assert len(list(cache.cache_dir().glob("trained-*.pt"))) == 2     # one entry per version of the code
    finally:
        sys.modules.pop("nnbook_stale_demo", None)


def test_edited_builder_without_source_is_rebuilt():
    """A function defined in a notebook cell (here: by exec) or a lambda has no file to read; its code is used."""
    ns = {"__name__": "__main__", "runs": []}
    exec("build = lambda: runs.append('a') or 'a'", ns)
    with pytest.raises(OSError):
        inspect.getsource(ns["build"])
    assert cache.cached("cell", {}, ns["build"]) == "a" and ns["runs"] == ["a"]
    assert cache.cached("cell", {}, ns["build"]) == "a" and ns["runs"] == ["a"]     # unchanged: read
    exec("build = lambda: runs.append('b') or 'b'", ns)                            # the cell edited, re-run
    assert cache.cached("cell", {}, ns["build"]) == "b" and ns["runs"] == ["a", "b"]
    exec("build = lambda: runs.append('a') or 'a'", ns)     # the first version re-run: a new function, same code
    assert cache.cached("cell", {}, ns["build"]) == "a" and ns["runs"] == ["a", "b"]


def test_edited_function_class_or_constant_the_builder_reaches_is_rebuilt():
    ns = {"__name__": "__main__", "runs": []}
    exec("def train(n):\n    runs.append(n)\n    return 2 * n\n", ns)
    exec("EPOCHS = 3\nbuild = lambda: train(EPOCHS)\n", ns)
    build = ns["build"]                                  # the builder itself is never redefined below
    assert cache.cached("helper", {}, build) == 6
    assert cache.cached("helper", {}, build) == 6 and ns["runs"] == [3]
    exec("def train(n):\n    runs.append(n)\n    return 3 * n\n", ns)   # a function it calls, edited
    assert cache.cached("helper", {}, build) == 9 and ns["runs"] == [3, 3]
    exec("EPOCHS = 4", ns)                                                # a constant it reads, edited
    assert cache.cached("helper", {}, build) == 12 and ns["runs"] == [3, 3, 4]

    exec("class Net:\n    scale = 1\n    def forward(self):\n        return self.scale\n", ns)
    exec("build_net = lambda: Net().forward()", ns)
    assert cache.cached("net", {}, ns["build_net"]) == 1
    exec("class Net:\n    scale = 1\n    def forward(self):\n        return -self.scale\n", ns)   # a method edited
    assert cache.cached("net", {}, ns["build_net"]) == -1

    # chapter 7's pattern: the builder is a closure over the function that makes the model
    exec("def trained(make):\n    def build():\n        return make()\n    return build\n", ns)
    exec("make = lambda: 'm1'", ns)
    assert cache.cached("closure", {}, ns["trained"](ns["make"])) == "m1"
    exec("make = lambda: 'm2'", ns)
    assert cache.cached("closure", {}, ns["trained"](ns["make"])) == "m2"
    exec("make = lambda: 'm1'", ns)
    assert cache.code_key(ns["trained"](ns["make"])) == cache.code_key(ns["trained"](ns["make"]))


def test_partials_and_plain_values_are_in_the_key_but_lists_are_not():
    ns = {"__name__": "__main__"}
    exec("def train(epochs, lr=0.1):\n    return epochs * lr\n", ns)
    key = lambda *a, **k: cache.code_key(functools.partial(ns["train"], *a, **k))   # noqa: E731
    k3 = key(3)
    assert key(3) == k3 and len({k3, key(5), key(3, lr=0.2), key(3.0)}) == 4
    exec("def train(epochs, lr=0.2):\n    return epochs * lr\n", ns)      # a default argument edited
    assert key(3) != k3
    exec("def make(s):\n    return lambda: s\n", ns)                      # a closure over a number
    assert cache.code_key(ns["make"](1)) != cache.code_key(ns["make"](2))
    # the limit: mutable data (lists, dicts, tensors) is not hashed, only its type: it belongs in the config
    assert key([1, 2]) == key([3]) and key(torch.zeros(2)) == key(torch.ones(2))
    with pytest.raises(TypeError, match="code_key"):
        cache.code_key(ns["train"], None)


def test_code_in_another_module_is_covered_through_depends_on(tmp_path, monkeypatch):
    """The documented limit: code reached as a module attribute, or defined elsewhere, is named, not hashed."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    src = tmp_path / "nnbook_helpers_demo.py"
    src.write_text("def train():\n    return 'h1'\n")
    helpers = importlib.import_module("nnbook_helpers_demo")
    try:
        ns = {"__name__": "__main__", "helpers": helpers, "train": helpers.train}
        exec("by_attribute = lambda: helpers.train()\nby_name = lambda: train()\n", ns)
        for builder in ("by_attribute", "by_name"):
            assert cache.cached(builder, {}, ns[builder]) == "h1"
            assert cache.cached(builder, {}, ns[builder], depends_on=[helpers]) == "h1"
        src.write_text("def train():\n    return 'h2, edited'\n")
        importlib.reload(helpers)
        ns["train"] = helpers.train      # what re-running `from nnbook_helpers_demo import train` does
        for builder in ("by_attribute", "by_name"):
            assert cache.cached(builder, {}, ns[builder]) == "h1"                  # not covered: stale
            assert cache.cached(builder, {}, ns[builder], depends_on=[helpers]) == "h2, edited"   # covered
        assert cache.cached("by_name", {}, ns["by_name"], depends_on=(helpers.train,)) == "h2, edited"
    finally:
        sys.modules.pop("nnbook_helpers_demo", None)


_SAME_KEY = textwrap.dedent("""
    import importlib.util
    spec = importlib.util.spec_from_file_location("cache", {cache_py!r})
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    ns = {{"__name__": "__main__"}}
    exec({source!r}, ns)
    print(cache.code_key(ns["build"]))
""")
_KEYED_SOURCE = textwrap.dedent("""
    NAMES = frozenset({"conv", "fc", "pool", "relu", "bn"})
    class Net:
        kinds = ("a", "b")
        def forward(self, x):
            return [k for k in x if k in {"conv", "fc", "x", "y"}]
    def helper(x):
        return sorted(NAMES) + Net().forward(x)
    build = lambda: helper({"conv", "pool"})
""")


def test_the_key_is_the_same_in_every_process(tmp_path):
    """Sets and frozensets iterate in an order that depends on the process's hash seed; the key must not."""
    ns = {"__name__": "__main__"}
    exec(_KEYED_SOURCE, ns)
    here = cache.code_key(ns["build"])
    script = tmp_path / "key.py"
    script.write_text(_SAME_KEY.format(cache_py=CACHE_PY, source=_KEYED_SOURCE))
    keys = {subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED=str(seed))).stdout.strip() for seed in (0, 1, 2)}
    assert keys == {here}


def test_a_changed_nnbook_rebuilds(tmp_path, monkeypatch):
    calls = []
    build = _build_counter(calls, 1)
    cache.cached("thing", {"k": 1}, build)
    original = cache._NNBOOK_CODE
    monkeypatch.setattr(cache, "_NNBOOK_CODE", "another nnbook")    # as after editing any nnbook/*.py
    cache.cached("thing", {"k": 1}, build)
    assert len(calls) == 2
    monkeypatch.setattr(cache, "_NNBOOK_CODE", original)   # (not monkeypatch.undo: it would drop conftest's folder)
    cache.cached("thing", {"k": 1}, build)
    assert len(calls) == 2                                           # the first entry again
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__pycache__").mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    return 1\n")
    (pkg / "data.json").write_text("{}")
    before = cache._package_fingerprint(pkg)
    (pkg / "__pycache__" / "c.py").write_text("junk")
    (pkg / "data.json").write_text('{"resources": "are data, not code"}')
    assert cache._package_fingerprint(pkg) == before
    (pkg / "sub" / "b.py").write_text("def f():\n    return 2\n")
    assert cache._package_fingerprint(pkg) != before
    (pkg / "sub" / "b.py").write_text("def f():\n    return 1\n")
    assert cache._package_fingerprint(pkg) == before


def test_cache_off_builds_every_time_and_writes_nothing(tmp_path, monkeypatch):
    folder = Path(os.environ["NNBOOK_CACHE"])           # the private folder conftest.py gives every test
    cache.cached("warm", {}, _build_counter([], 0))
    before = sorted(folder.rglob("*"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)                               # a relative folder called "off" would appear here
    monkeypatch.setenv("HOME", str(tmp_path / "home"))    # and the default folder here
    for switch in ("off", " OFF "):
        monkeypatch.setenv("NNBOOK_CACHE", switch)
        assert not cache.enabled()
        calls = []
        build = _build_counter(calls, {"w": torch.ones(3)})
        for refresh in (False, False, True):
            assert torch.equal(cache.cached("warm", {}, build, refresh=refresh)["w"], torch.ones(3))
        assert len(calls) == 3                            # built every time
        with pytest.raises(RuntimeError, match="build failed"):
            cache.cached("warm", {}, _build_counter(calls, RuntimeError("build failed")))
        with pytest.raises(RuntimeError, match=r"cache_dir: the cache is switched off \(NNBOOK_CACHE=off\)"):
            cache.cache_dir()
        with pytest.raises(RuntimeError, match=r"entry_path: the cache is switched off \(NNBOOK_CACHE=off\)"):
            cache.entry_path("warm", {}, build)
        assert cache.clean_stale_temporaries() == 0
        with pytest.raises(ValueError, match="cached: name"):             # bad input is still refused
            cache.cached("", {}, build)
        with pytest.raises(TypeError, match="cached: config must hold only JSON values"):
            cache.cached("x", {"t": torch.ones(1)}, build)
        with pytest.raises(TypeError, match="cached: refresh"):
            cache.cached("x", {}, build, refresh=1)
        assert len(calls) == 4
    assert list(work.iterdir()) == [] and not (tmp_path / "home").exists()
    assert sorted(folder.rglob("*")) == before            # nothing written, nothing removed
    monkeypatch.setenv("NNBOOK_CACHE", str(folder))
    assert cache.enabled()
    calls = []
    cache.cached("warm", {}, _build_counter(calls, 0))
    assert calls == []                                     # the entry from before is still there, and used
