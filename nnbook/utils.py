"""Small utilities every chapter needs: device choice, seeding, version check, showing source."""
from __future__ import annotations

import inspect
import os
import random
import warnings

import numpy as np
import torch

_KNOWN_DEVICES = ("cpu", "cuda", "mps")
_CURRENT_SEED: int | None = None


def device(name: str | None = None) -> torch.device:
    """Return the device the book's code should run on.

    Order of preference: the ``name`` argument, then the ``NNBOOK_DEVICE``
    environment variable, then CUDA if available, then Apple's MPS, then the CPU.

    Args:
        name: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; ``None`` chooses automatically.

    Returns:
        A :class:`torch.device`.

    Raises:
        TypeError: ``name`` is not a string or ``None``.
        ValueError: the name is not one of the known device types, or names a
            device that this machine does not have.
    """
    if name is None:
        name = os.environ.get("NNBOOK_DEVICE") or None
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(name, str):
        raise TypeError(f"device name must be a str or None, got {type(name).__name__}")
    kind = name.split(":")[0].strip().lower()
    if kind not in _KNOWN_DEVICES:
        raise ValueError(f"unknown device {name!r}: expected one of {', '.join(_KNOWN_DEVICES)} (optionally 'cuda:N')")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but CUDA is not available on this machine")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} was asked for, but Apple MPS is not available on this machine")
    return torch.device(name.strip().lower())


def seed_everything(seed: int = 0) -> int:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and every GPU).

    The environment variable ``NNBOOK_SEED``, when set, overrides ``seed``: this is
    how the book checks that every notebook's assertions hold for other seeds
    (``NNBOOK_SEED=3 pytest --nbval chapters``) without editing the notebooks.

    Args:
        seed: a non-negative integer.

    Returns:
        The seed actually used (``int``), so a notebook can pass it on.

    Raises:
        TypeError: ``seed`` is not an ``int``.
        ValueError: ``seed`` is negative, or ``NNBOOK_SEED`` is not a non-negative integer.
    """
    from ._checks import check_int

    seed = check_int(seed, "seed_everything", "seed")
    env = os.environ.get("NNBOOK_SEED")
    if env is not None and env.strip():
        if not env.strip().isdigit():
            raise ValueError(f"NNBOOK_SEED must be a non-negative integer, got {env!r}")
        seed = int(env)
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    global _CURRENT_SEED
    _CURRENT_SEED = seed
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def current_seed() -> int | None:
    """The seed of the last :func:`seed_everything` call in this process (``None`` before any)."""
    return _CURRENT_SEED


def progress_bar(iterable, *, desc: str | None = None, disable: bool = False, total: int | None = None):
    """A progress bar over ``iterable``: ``tqdm.auto`` (a widget in Jupyter, text in a terminal).

    Every loop of the book that shows progress goes through this one function, so the
    way progress is displayed (and stored in executed notebooks) is decided here.
    When the environment variable ``NNBOOK_PROGRESS`` is ``off`` — as ``tools/execute.py``
    and the test suite set it — no bar is drawn, so stored notebooks hold no
    progress widgets (which render blank or broken in the HTML book).
    """
    from tqdm.auto import tqdm

    if os.environ.get("NNBOOK_PROGRESS", "").strip().lower() == "off":
        disable = True
    return tqdm(iterable, desc=desc, disable=disable, total=total, leave=True)


def check_version(executed_with: str, repository: str | None = None) -> bool:
    """Warn when the installed nnbook differs from the version a notebook was executed with.

    Every chapter's setup cell calls this with the version and the repository address stamped in
    by ``tools/stamp_setup.py``. The warning says what to do: install the release the notebook was
    executed with (its tag ``v<version>``), or re-execute the chapter with the installed one.

    Args:
        executed_with: the version string stored in the notebook, such as ``"0.2.0"``.
        repository: the book's repository address (``repository.url`` of ``_config.yml``), used in
            the install command the warning shows; ``None`` shows a generic command.

    Returns:
        ``True`` when the versions agree, ``False`` (after a :class:`UserWarning`) when not.

    Raises:
        TypeError: ``executed_with`` (or ``repository``) is not a string.

    Examples:
        >>> import warnings
        >>> from nnbook import __version__
        >>> check_version(__version__)
        True
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     check_version("0.0.1", "https://example.org/nnbook")
        False
        >>> "git+https://example.org/nnbook@v0.0.1" in str(caught[0].message)
        True
    """
    from . import __version__

    if not isinstance(executed_with, str):
        raise TypeError(f"check_version: executed_with must be a version string, got {type(executed_with).__name__}")
    if repository is not None and not isinstance(repository, str):
        raise TypeError(f"check_version: repository must be a string, got {type(repository).__name__}")
    if executed_with != __version__:
        source = f"git+{repository}@v{executed_with}" if repository else f"the release v{executed_with}"
        warnings.warn(
            f"this notebook was executed with nnbook {executed_with}, but nnbook {__version__} is installed, "
            f"so its code and stored outputs may not match. To run it as it was written, install "
            f"that release (pip install 'nnbook[book] @ {source}') and restart the kernel; or keep "
            f"nnbook {__version__} and re-execute the chapter (CONTRIBUTING.md: tools/execute.py).",
            UserWarning,
            stacklevel=2,
        )
        return False
    return True


def show_source(obj) -> None:
    """Display the source code of a function or class, highlighted when running in Jupyter.

    Chapters use this to show the ``nnbook`` code they teach instead of pasting a copy.

    Args:
        obj: a function, method, class or module.

    Raises:
        TypeError: the object has no Python source (a builtin, an instance, ...).
    """
    try:
        src = inspect.getsource(obj)
    except (TypeError, OSError) as exc:
        raise TypeError(f"show_source expects a Python function, class or module, got {obj!r}: {exc}") from None
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(f"```python\n{src}```"))
            return
    except ImportError:  # pragma: no cover - IPython is always there in a notebook
        pass
    print(src)
