"""Character-level language models for chapter 9's language case study.

Everything the chapter needs to go from raw text to a deployed int8 model:

* a **corpus** built deterministically from the docstrings of a fixed list of pure-Python
  standard-library modules (:func:`build_corpus`), so every reader has the same text
  without downloading anything (its SHA-256 differs a little between Python versions,
  because docstrings get edited);
* a 96-symbol **alphabet** (newline and printable ASCII; :func:`encode`, :func:`decode`)
  and a contiguous train/validation/test **split** (:func:`split_corpus`);
* an LSTM language model (:class:`CharLM`), random training windows
  (:class:`RandomWindows`), the training step for :func:`nnbook.train.fit`
  (:func:`lm_step`) and the **bits per character** of a text (:func:`bits_per_char`);
* **generation** by temperature sampling (:func:`generate`) with carried state, for the
  PyTorch model and for an ONNX Runtime session (:class:`OnnxCharLM`);
* ONNX **export** with explicit state inputs (:func:`export_charlm_onnx`) and int8
  **dynamic quantization** with ONNX Runtime (:func:`quantize_charlm_dynamic`).

The model family is the character-level LSTM of Graves (2013) and Karpathy et al.
(2015); bits per character is the cross-entropy in base 2 (lower is better; a uniform
guess over 96 symbols scores log2(96) ≈ 6.58).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import os
import sys
import time

import torch
from torch import nn

from ._checks import check_fraction, check_int, check_model, check_positive, check_tensor

__all__ = ["STDLIB_MODULES", "ALPHABET", "VOCAB_SIZE", "build_corpus", "corpus_info", "encode", "decode",
           "split_corpus", "CharLM", "TEACHER_PATH", "load_teacher", "teacher_record", "LogitsOnly", "RandomWindows", "chunk_windows", "teacher_logits", "WindowSampler", "lm_step", "bits_per_char", "generate",
           "chars_per_second", "export_charlm_onnx", "quantize_charlm_dynamic", "OnnxCharLM"]

#: The modules whose docstrings make the corpus: pure Python (no C accelerator replaces
#: their functions) and present in every CPython 3.9+.
STDLIB_MODULES = ("argparse", "calendar", "collections", "configparser", "contextlib", "csv",
                  "dataclasses", "difflib", "email.message", "fractions", "ftplib", "functools",
                  "http.client", "imaplib", "ipaddress", "json", "optparse", "random", "shutil",
                  "smtplib", "statistics", "textwrap", "threading", "urllib.parse", "uuid", "wave",
                  "zipfile")

#: The alphabet: newline, then the 95 printable ASCII characters (space to ``~``).
ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))
VOCAB_SIZE = len(ALPHABET)
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_UNKNOWN = _INDEX["?"]


def _docs_of(module) -> list[str]:
    """Docstrings of a module, then of its own classes (with their methods) and functions, sorted by name."""
    docs = [inspect.getdoc(module) or ""]
    for name, obj in sorted(vars(module).items()):
        if getattr(obj, "__module__", None) != module.__name__ or name.startswith("_"):
            continue
        if inspect.isclass(obj):
            docs.append(inspect.getdoc(obj) or "")
            for _, meth in sorted(vars(obj).items()):
                if inspect.isfunction(meth) and meth.__doc__:
                    docs.append(inspect.getdoc(meth))
        elif inspect.isfunction(obj) and obj.__doc__:
            docs.append(inspect.getdoc(obj))
    return [d for d in docs if d]


def build_corpus(modules=STDLIB_MODULES) -> str:
    """The text of the chapter's corpus: the docstrings of ``modules``, in a fixed order.

    For each module (in the given order): its own docstring, then, sorted by name, the
    docstrings of the public classes (each followed by its methods', sorted by name) and
    functions that the module itself defines (``inspect.getdoc``, so indentation is
    cleaned).  Docstrings are separated by a blank line.  Tabs become four spaces; any
    character outside :data:`ALPHABET` becomes ``"?"``.

    Args:
        modules: importable module names (strings).

    Returns:
        A ``str`` (about 300 000 characters for :data:`STDLIB_MODULES`; the exact text
        depends a little on the Python version).

    Raises:
        TypeError: ``modules`` is not a list/tuple of strings.
        ValueError: ``modules`` is empty.
        ModuleNotFoundError: a module cannot be imported.

    Examples:
        >>> text = build_corpus(["textwrap"])
        >>> text.startswith("Text wrapping and filling.")
        True
        >>> set(text) <= set(ALPHABET)
        True
    """
    if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) for m in modules):
        raise TypeError(f"build_corpus: modules must be a list or tuple of module names, got {type(modules).__name__}")
    if not modules:
        raise ValueError("build_corpus: modules must name at least one module, got an empty sequence")
    docs = [d for name in modules for d in _docs_of(importlib.import_module(name))]
    text = "\n\n".join(docs).replace("\t", "    ")
    return "".join(c if c in _INDEX else "?" for c in text)


def corpus_info(text: str, modules=STDLIB_MODULES) -> dict:
    """What identifies a corpus: Python version, module list, length and SHA-256 (UTF-8).

    Examples:
        >>> corpus_info("abc", ["textwrap"])["chars"]
        3
    """
    if not isinstance(text, str):
        raise TypeError(f"corpus_info: text must be a str, got {type(text).__name__}")
    return {"python": sys.version.split()[0], "modules": list(modules), "chars": len(text),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def encode(text: str) -> torch.Tensor:
    """Character indices of ``text`` in :data:`ALPHABET` (int64, shape ``(len(text),)``).

    Characters outside the alphabet map to the index of ``"?"``.

    Examples:
        >>> encode("ab\\n").tolist()
        [66, 67, 0]
    """
    if not isinstance(text, str):
        raise TypeError(f"encode: text must be a str, got {type(text).__name__}")
    return torch.tensor([_INDEX.get(c, _UNKNOWN) for c in text], dtype=torch.long)


def decode(ids) -> str:
    """The text of a sequence of indices (a 1-D integer tensor or a list of ints).

    Examples:
        >>> decode(encode("Hello"))
        'Hello'
    """
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1 or ids.is_floating_point():
            raise ValueError(f"decode: ids must be a 1-D integer tensor, got shape {tuple(ids.shape)} and {ids.dtype}")
        ids = ids.tolist()
    if not all(isinstance(i, int) and 0 <= i < VOCAB_SIZE for i in ids):
        raise ValueError(f"decode: every index must be an int in [0, {VOCAB_SIZE})")
    return "".join(ALPHABET[i] for i in ids)


def split_corpus(ids: torch.Tensor, val_fraction: float = 0.1, test_fraction: float = 0.1):
    """Split a 1-D index tensor into contiguous train, validation and test blocks (in that order).

    Contiguous blocks (not random windows) keep the three splits from sharing
    sentences; the last ``val_fraction + test_fraction`` of the text is held out.

    Returns:
        ``(train, val, test)`` 1-D tensors (views of ``ids``).

    Raises:
        TypeError, ValueError: ``ids`` is not a 1-D integer tensor; fractions outside
        ``(0, 1)`` or summing to 1 or more.

    Examples:
        >>> [len(p) for p in split_corpus(torch.arange(100))]
        [80, 10, 10]
    """
    check_tensor(ids, "split_corpus", "ids")
    if ids.dim() != 1 or ids.is_floating_point():
        raise ValueError(f"split_corpus: ids must be a 1-D integer tensor, got shape {tuple(ids.shape)}, {ids.dtype}")
    val_fraction = check_fraction(val_fraction, "split_corpus", "val_fraction")
    test_fraction = check_fraction(test_fraction, "split_corpus", "test_fraction")
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"split_corpus: need 0 < val_fraction, 0 < test_fraction and val_fraction + test_fraction"
                         f" < 1, got {val_fraction} and {test_fraction}")
    n = len(ids)
    n_val, n_test = int(n * val_fraction), int(n * test_fraction)
    n_train = n - n_val - n_test
    return ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:]


class CharLM(nn.Module):
    """A character-level LSTM language model: embedding → LSTM → linear read-out.

    Args:
        hidden: LSTM state size.
        embed: embedding width.
        layers: stacked LSTM layers.
        vocab: alphabet size (:data:`VOCAB_SIZE`).

    ``forward(x, state=None)`` takes int64 indices ``(N, L)`` and an optional state
    ``(h, c)``, each ``(layers, N, hidden)``, and returns ``(logits, state)`` with
    logits ``(N, L, vocab)`` (float32) for the next character at each position.

    Examples:
        >>> m = CharLM(hidden=8, embed=4)
        >>> logits, (h, c) = m(torch.zeros(2, 5, dtype=torch.long))
        >>> tuple(logits.shape), tuple(h.shape)
        ((2, 5, 96), (1, 2, 8))
    """

    def __init__(self, hidden: int = 256, embed: int = 32, layers: int = 1, vocab: int = VOCAB_SIZE):
        super().__init__()
        self.hidden = check_int(hidden, "CharLM", "hidden", minimum=1)
        self.embed_dim = check_int(embed, "CharLM", "embed", minimum=1)
        self.layers = check_int(layers, "CharLM", "layers", minimum=1)
        self.vocab = check_int(vocab, "CharLM", "vocab", minimum=2)
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def config(self) -> dict:
        """The constructor arguments (to rebuild the model from a state dict)."""
        return {"hidden": self.hidden, "embed": self.embed_dim, "layers": self.layers, "vocab": self.vocab}

    def forward(self, x: torch.Tensor, state=None):
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.is_floating_point():
            raise ValueError(f"CharLM: x must be an integer tensor of shape (N, L), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        out, state = self.lstm(self.embed(x), state)
        return self.head(out), state


TEACHER_PATH = os.path.join(os.path.dirname(__file__), "resources", "ch9_charlm_teacher.pt")


def teacher_record(path=TEACHER_PATH) -> dict:
    """The JSON sidecar of the shipped teacher: command, versions, corpus, recorded bits per character."""
    import json

    with open(os.path.splitext(os.fspath(path))[0] + ".json", encoding="utf-8") as fh:
        return json.load(fh)


def load_teacher(path=TEACHER_PATH) -> CharLM:
    """The chapter's shipped teacher (built by ``tools/build_ch9_language.py``), in eval mode on the CPU.

    The file holds the model's constructor arguments and a float32 state dict (no
    pickled code: it is read with ``weights_only=True``); its sidecar ``.json`` records
    how it was trained (:func:`teacher_record`).

    Raises:
        FileNotFoundError: no such file.
    """
    if not os.path.isfile(os.fspath(path)):
        raise FileNotFoundError(f"load_teacher: no teacher weights at {os.fspath(path)!r} "
                                f"(build them with tools/build_ch9_language.py)")
    blob = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    model = CharLM(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    return model.eval()


class RandomWindows:
    """An iterable of ``steps`` random training windows ``(x, y)`` from a 1-D index tensor.

    Each batch holds ``batch_size`` windows of ``seq_len`` characters ``x`` and the same
    windows shifted by one, ``y`` (the next characters), both int64 ``(batch_size, seq_len)``.
    The start positions come from a private generator seeded with ``seed``; each pass
    over the iterable draws new windows (so :func:`nnbook.train.fit` sees fresh data
    every epoch), and two objects with the same arguments yield the same sequence.

    Examples:
        >>> w = RandomWindows(torch.arange(100), seq_len=8, batch_size=4, steps=3, seed=0)
        >>> x, y = next(iter(w))
        >>> tuple(x.shape), bool((y[:, :-1] == x[:, 1:]).all()), len(w)
        ((4, 8), True, 3)
    """

    def __init__(self, ids: torch.Tensor, seq_len: int, batch_size: int, steps: int, seed: int = 0):
        check_tensor(ids, "RandomWindows", "ids")
        self.seq_len = check_int(seq_len, "RandomWindows", "seq_len", minimum=1)
        self.batch_size = check_int(batch_size, "RandomWindows", "batch_size", minimum=1)
        self.steps = check_int(steps, "RandomWindows", "steps", minimum=1)
        if ids.dim() != 1 or len(ids) < seq_len + 2:
            raise ValueError(f"RandomWindows: ids must be 1-D and longer than seq_len + 1 = {seq_len + 1}, "
                             f"got shape {tuple(ids.shape)}")
        self.ids = ids
        self.gen = torch.Generator().manual_seed(check_int(seed, "RandomWindows", "seed", minimum=0) % (2 ** 63))
        self._offsets = torch.arange(self.seq_len + 1)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            start = torch.randint(0, len(self.ids) - self.seq_len - 1, (self.batch_size, 1), generator=self.gen)
            win = self.ids[start + self._offsets]
            yield win[:, :-1], win[:, 1:]


class LogitsOnly(nn.Module):
    """A view of a :class:`CharLM` whose ``forward(x)`` returns the logits only (the state is dropped).

    For code written for classifiers, such as :func:`nnbook.distill.distill_step`, which
    calls ``model(x)`` and expects logits.  The wrapped model's parameters are shared, not
    copied: training the view trains the model.

    Examples:
        >>> m = CharLM(hidden=8, embed=4)
        >>> tuple(LogitsOnly(m)(torch.zeros(2, 3, dtype=torch.long)).shape)
        (2, 3, 96)
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = check_model(model, "LogitsOnly")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


def chunk_windows(ids: torch.Tensor, seq_len: int):
    """Cut a text into non-overlapping windows: inputs ``x`` and next characters ``y``, int64 ``(n, seq_len)``.

    ``n = (len(ids) - 1) // seq_len``; the remainder is dropped.  A fixed set of windows
    lets a teacher's predictions be computed once (:func:`teacher_logits`) and reused
    by every training run.

    Examples:
        >>> x, y = chunk_windows(torch.arange(10), 4)
        >>> x.tolist(), y.tolist()
        ([[0, 1, 2, 3], [4, 5, 6, 7]], [[1, 2, 3, 4], [5, 6, 7, 8]])
    """
    check_tensor(ids, "chunk_windows", "ids")
    seq_len = check_int(seq_len, "chunk_windows", "seq_len", minimum=1)
    if ids.dim() != 1 or len(ids) <= seq_len:
        raise ValueError(f"chunk_windows: ids must be 1-D and longer than seq_len = {seq_len}, "
                         f"got shape {tuple(ids.shape)}")
    return _rows(ids, (len(ids) - 1) // seq_len)


def teacher_logits(teacher: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """A language model's logits for every window of ``x`` (int64 ``(n, L)``), stored as float16 ``(n, L, V)``.

    Each window is read from a zero state, as the student will read it.  float16 halves
    the memory (about 39 MB for 200 000 characters and 96 symbols); the rounding
    (relative 1e-3) is far below what distillation can resolve.
    """
    check_tensor(x, "teacher_logits", "x")
    batch_size = check_int(batch_size, "teacher_logits", "batch_size", minimum=1)
    was = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            out = [teacher(x[i:i + batch_size])[0].half() for i in range(0, len(x), batch_size)]
    finally:
        teacher.train(was)
    return torch.cat(out)


class WindowSampler:
    """An iterable of ``steps`` batches of ``batch_size`` rows drawn at random from aligned tensors.

    ``WindowSampler(x, y, t, ...)`` yields ``(x[i], y[i], t[i].float())`` for random row
    indices ``i`` (float16 tensors are returned as float32), the layout that
    :func:`nnbook.distill.distill_step` takes with precomputed teacher logits; with
    ``(x, y)`` it yields the pairs :func:`lm_step` takes.  Rows are drawn with a
    private generator seeded by ``seed``: two samplers with the same seed give two
    training runs the same data in the same order.

    Examples:
        >>> s = WindowSampler(torch.arange(10)[:, None], torch.arange(10)[:, None], batch_size=4, steps=2, seed=0)
        >>> [tuple(b[0].shape) for b in s]
        [(4, 1), (4, 1)]
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, steps: int, seed: int = 0):
        if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
            raise TypeError("WindowSampler: give one or more tensors")
        if len({len(t) for t in tensors}) != 1:
            raise ValueError(f"WindowSampler: the tensors must have the same length, got {[len(t) for t in tensors]}")
        self.tensors = tensors
        self.batch_size = check_int(batch_size, "WindowSampler", "batch_size", minimum=1)
        self.steps = check_int(steps, "WindowSampler", "steps", minimum=1)
        self.gen = torch.Generator().manual_seed(check_int(seed, "WindowSampler", "seed", minimum=0) % (2 ** 63))

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            i = torch.randint(0, len(self.tensors[0]), (self.batch_size,), generator=self.gen)
            yield tuple(t[i].float() if t.dtype == torch.float16 else t[i] for t in self.tensors)


def lm_step(model: nn.Module, batch) -> tuple:
    """The training step of a language model for :func:`nnbook.train.fit`: next-character cross-entropy.

    ``batch`` is ``(x, y)``, both int64 ``(N, L)``; the logits ``(N, L, V)`` are flattened
    to ``(N·L, V)`` and the targets to ``(N·L,)``, so ``fit``'s accuracy is the
    next-character accuracy.

    Returns:
        ``(loss, logits, targets)``; the loss is the mean cross-entropy in nats.
    """
    x, y = batch
    logits = model(x)
    if isinstance(logits, tuple):  # a CharLM returns (logits, state)
        logits = logits[0]
    logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    return nn.functional.cross_entropy(logits, y), logits, y


def _rows(ids: torch.Tensor, rows: int):
    """The text cut into ``rows`` equal contiguous rows (inputs and next characters), remainder dropped."""
    length = (len(ids) - 1) // rows
    x = ids[:rows * length].reshape(rows, length)
    y = ids[1:rows * length + 1].reshape(rows, length)
    return x, y


def bits_per_char(model, ids: torch.Tensor, rows: int = 16) -> float:
    """Bits per character of ``model`` on the text ``ids``: mean next-character cross-entropy / ln 2.

    The text is cut into ``rows`` contiguous rows that are read in parallel, each from a
    zero state to its end with the state carried (so only the first characters of each
    row lack context).

    Args:
        model: a :class:`CharLM` or an :class:`OnnxCharLM` (anything called as
            ``model(x, state) -> (logits, state)``).
        ids: 1-D int64 indices, longer than ``rows``.
        rows: parallel rows.

    Returns:
        Bits per character (float; 0 is perfect, log2(96) ≈ 6.58 is a uniform guess).

    Examples:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> 6.0 < bits_per_char(CharLM(hidden=8, embed=4), torch.randint(0, 96, (200,)), rows=4) < 7.5
        True
    """
    check_tensor(ids, "bits_per_char", "ids")
    rows = check_int(rows, "bits_per_char", "rows", minimum=1)
    if ids.dim() != 1 or ids.is_floating_point() or len(ids) <= rows + 1:
        raise ValueError(f"bits_per_char: ids must be a 1-D integer tensor longer than rows + 1 = {rows + 1}, "
                         f"got shape {tuple(ids.shape)}")
    x, y = _rows(ids, rows)
    if isinstance(model, nn.Module):
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits, _ = model(x)
        finally:
            model.train(was)
    else:
        logits, _ = model(x)
    nats = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
    return float(nats) / math.log(2)


def generate(model, prompt: str, n_chars: int, temperature: float = 0.8, seed: int = 0) -> str:
    """Sample ``n_chars`` characters after ``prompt``, one at a time, with the state carried.

    Each next character is drawn from ``softmax(logits / temperature)`` with a private
    generator seeded by ``seed`` (so the text is reproducible).  Low temperatures make
    the text more predictable, high ones more varied.

    Args:
        model: a :class:`CharLM` or an :class:`OnnxCharLM`.
        prompt: non-empty text to condition on.
        n_chars: how many characters to generate (``>= 1``).
        temperature: ``> 0``.
        seed: the sampling seed.

    Returns:
        The generated characters (without the prompt).

    Raises:
        ValueError: empty prompt; ``n_chars < 1``; ``temperature <= 0``.

    Examples:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> m = CharLM(hidden=8, embed=4)
        >>> len(generate(m, "Return ", 20)), generate(m, "a", 5, seed=1) == generate(m, "a", 5, seed=1)
        (20, True)
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"generate: prompt must be a non-empty str, got {prompt!r}")
    n_chars = check_int(n_chars, "generate", "n_chars", minimum=1)
    temperature = check_positive(temperature, "generate", "temperature")
    gen = torch.Generator().manual_seed(check_int(seed, "generate", "seed", minimum=0) % (2 ** 63))
    is_torch = isinstance(model, nn.Module)
    if is_torch:
        was = model.training
        model.eval()
    out = []
    try:
        with torch.no_grad():
            logits, state = model(encode(prompt)[None], None)
            for _ in range(n_chars):
                probs = torch.softmax(logits[0, -1].float() / temperature, dim=-1)
                nxt = int(torch.multinomial(probs, 1, generator=gen))
                out.append(nxt)
                logits, state = model(torch.tensor([[nxt]]), state)
    finally:
        if is_torch:
            model.train(was)
    return decode(out)


def chars_per_second(model, n_chars: int = 200, prompt: str = "Return the ") -> float:
    """Measured generation throughput of :func:`generate` in characters per second (wall clock).

    One untimed warm-up run of 10 characters, then one timed run of ``n_chars``.  The
    number depends on the machine and on its load: report it, do not assert on it.
    """
    n_chars = check_int(n_chars, "chars_per_second", "n_chars", minimum=1)
    generate(model, prompt, 10)
    t0 = time.perf_counter()
    generate(model, prompt, n_chars)
    return n_chars / (time.perf_counter() - t0)


class _StateIO(nn.Module):
    """``(x, h0, c0) -> (logits, h, c)``: a :class:`CharLM` with its state as plain tensors (for ONNX)."""

    def __init__(self, model: CharLM):
        super().__init__()
        self.model = model

    def forward(self, x, h0, c0):
        logits, (h, c) = self.model(x, (h0, c0))
        return logits, h, c


def export_charlm_onnx(model: CharLM, path) -> int:
    """Export a :class:`CharLM` to one ONNX file with its LSTM state as explicit inputs and outputs.

    Inputs ``x`` (int64 ``(N, L)``), ``h0``, ``c0`` (float32 ``(layers, N, hidden)``);
    outputs ``logits`` ``(N, L, vocab)``, ``h``, ``c``; ``N`` and ``L`` are dynamic, so
    the same file scores whole texts and generates one character at a time.  The LSTM
    becomes one ONNX ``LSTM`` node.  Uses PyTorch's TorchScript-based exporter
    (``dynamo=False``), which maps ``nn.LSTM`` to that node; the book's
    :func:`nnbook.quantize.export_onnx` takes a single float input and so does not fit.

    Returns:
        The file size in bytes.

    Raises:
        TypeError: ``model`` is not a :class:`CharLM`; ``path`` is not a path.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     n = export_charlm_onnx(CharLM(hidden=8, embed=4), os.path.join(d, "m.onnx"))
        ...     m = OnnxCharLM(os.path.join(d, "m.onnx"))
        ...     tuple(m(torch.zeros(3, 7, dtype=torch.long))[0].shape)
        (3, 7, 96)
    """
    import contextlib
    import io
    import warnings

    if not isinstance(model, CharLM):
        raise TypeError(f"export_charlm_onnx: model must be a CharLM, got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"export_charlm_onnx: path must be a file path, got {type(path).__name__}")
    import copy

    m = _StateIO(copy.deepcopy(model).cpu().eval())
    x = torch.zeros(2, 3, dtype=torch.long)
    h0 = torch.zeros(model.layers, 2, model.hidden)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x, h0, h0.clone()), os.fspath(path), dynamo=False,
                          input_names=["x", "h0", "c0"], output_names=["logits", "h", "c"],
                          dynamic_axes={"x": {0: "n", 1: "length"}, "h0": {1: "n"}, "c0": {1: "n"},
                                        "logits": {0: "n", 1: "length"}, "h": {1: "n"}, "c": {1: "n"}})
    return os.path.getsize(path)


def quantize_charlm_dynamic(float_path, int8_path) -> int:
    """Quantize an exported language model to int8 with ONNX Runtime's dynamic quantization.

    ``onnxruntime.quantization.quantize_dynamic`` stores the weights of the ``LSTM`` and
    ``MatMul``/``Gemm`` nodes as int8 (one scale per tensor) and quantizes their inputs on
    the fly, per call, from the observed range (no calibration data needed: the usual
    choice for recurrent models and Transformers, whose cost is in weights).  The
    embedding table (a ``Gather``) stays float32.

    Returns:
        The size of the int8 file in bytes.

    Raises:
        FileNotFoundError: no file at ``float_path``.
    """
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not os.path.isfile(os.fspath(float_path)):
        raise FileNotFoundError(f"quantize_charlm_dynamic: no ONNX file at {os.fspath(float_path)!r}")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(os.fspath(float_path), os.fspath(int8_path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return os.path.getsize(int8_path)


class OnnxCharLM:
    """An ONNX Runtime session of an exported :class:`CharLM`, called like the model.

    ``model(x, state=None) -> (logits, state)`` with ``x`` int64 ``(N, L)`` and ``state``
    ``(h, c)`` tensors (zeros when ``None``); works with :func:`bits_per_char` and
    :func:`generate`.

    Args:
        path: a file from :func:`export_charlm_onnx` or :func:`quantize_charlm_dynamic`.
        threads: intra-op threads (1 by default, as in the book's measurements).
    """

    def __init__(self, path, threads: int = 1):
        import onnxruntime as ort

        if not os.path.isfile(os.fspath(path)):
            raise FileNotFoundError(f"OnnxCharLM: no ONNX file at {os.fspath(path)!r}")
        threads = check_int(threads, "OnnxCharLM", "threads", minimum=1)
        ort.set_default_logger_severity(3)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])
        shape = self.session.get_inputs()[1].shape
        self.layers, self.hidden = int(shape[0]), int(shape[2])

    def __call__(self, x: torch.Tensor, state=None):
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.is_floating_point():
            raise ValueError(f"OnnxCharLM: x must be an integer tensor of shape (N, L), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if state is None:
            z = torch.zeros(self.layers, x.shape[0], self.hidden)
            state = (z, z)
        feeds = {"x": x.numpy(), "h0": state[0].numpy(), "c0": state[1].numpy()}
        logits, h, c = self.session.run(None, feeds)
        return torch.from_numpy(logits), (torch.from_numpy(h), torch.from_numpy(c))
