"""Input checks shared by every public ``nnbook`` function (private module).

Each check takes ``where``, the name of the public function that calls it, and
raises ``TypeError`` (wrong type) or ``ValueError`` (right type, wrong value)
with a message of the form ``"<where>: <what> must be <expected>, got <given>"``,
so that a reader who passes bad input learns which call failed and why, instead
of meeting an error from deep inside PyTorch or NumPy.

All checks return the validated value (converted to a plain Python type where
that helps), so a caller can write ``k = check_int(k, "topk", "k", minimum=1)``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn


def _given(value: Any) -> str:
    """A short description of a value for an error message."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"a NumPy array of shape {value.shape}"
    if isinstance(value, (bool, numbers.Number, str)) or value is None:
        return repr(value)
    return f"a {type(value).__name__}"


def check_model(model: Any, where: str, name: str = "model") -> nn.Module:
    """Raise ``TypeError`` unless ``model`` is a ``torch.nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where}: {name} must be a torch.nn.Module, got {_given(model)}")
    return model


def check_int(value: Any, where: str, name: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """An ``int`` (NumPy integers accepted, ``bool`` refused) within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: {name} must be an int, got {_given(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{where}: {name} must be <= {maximum}, got {value}")
    return value


def check_float(value: Any, where: str, name: str, *, minimum: float | None = None,
                maximum: float | None = None, min_open: bool = False, max_open: bool = False) -> float:
    """A finite real number within the given bounds (open or closed at each end)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
            value = value.item()
        else:
            raise TypeError(f"{where}: {name} must be a real number, got {_given(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be finite, got {value}")
    lo = "(" if min_open else "["
    hi = ")" if max_open else "]"
    interval = f"{lo}{'-inf' if minimum is None else minimum}, {'inf' if maximum is None else maximum}{hi}"
    if minimum is not None and (value < minimum or (min_open and value == minimum)):
        raise ValueError(f"{where}: {name} must be in {interval}, got {value}")
    if maximum is not None and (value > maximum or (max_open and value == maximum)):
        raise ValueError(f"{where}: {name} must be in {interval}, got {value}")
    return value


def check_fraction(value: Any, where: str, name: str, *, allow_one: bool = False) -> float:
    """A probability-like number in ``[0, 1)`` (or ``[0, 1]`` with ``allow_one``)."""
    return check_float(value, where, name, minimum=0.0, maximum=1.0, max_open=not allow_one)


def check_positive(value: Any, where: str, name: str) -> float:
    """A finite number ``> 0`` (temperatures, scales, learning rates)."""
    return check_float(value, where, name, minimum=0.0, min_open=True)


def check_bool(value: Any, where: str, name: str) -> bool:
    """A real ``bool`` (so ``'no'`` is not silently read as ``True``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be True or False, got {_given(value)}")
    return bool(value)


def check_choice(value: Any, where: str, name: str, choices: Iterable[Any]) -> Any:
    """One of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{where}: {name} must be one of {choices}, got {_given(value)}")
    return value


def check_tensor(value: Any, where: str, name: str = "x", *, ndim: int | Iterable[int] | None = None,
                 floating: bool = False, finite: bool = False, nonempty: bool = True) -> torch.Tensor:
    """A ``torch.Tensor`` with the given number of dimensions, optionally floating point and finite."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {_given(value)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{where}: {name} must be {want}, got shape {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating-point tensor, got dtype {value.dtype}")
    if nonempty and value.numel() == 0:
        raise ValueError(f"{where}: {name} must not be empty, got shape {tuple(value.shape)}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{where}: {name} must hold only finite values, got NaN or Inf")
    return value


def check_labels(y: Any, where: str, n_classes: int | None = None, name: str = "labels") -> torch.Tensor:
    """Integer class labels of shape ``(N,)`` in ``[0, n_classes)``."""
    y = check_tensor(y, where, name, ndim=1)
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{where}: {name} must be an integer tensor, got dtype {y.dtype}")
    if n_classes is not None and len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"{where}: {name} must lie in [0, {n_classes}), got values in "
                         f"[{int(y.min())}, {int(y.max())}]")
    return y


def get_submodule(root: nn.Module, name: str, where: str) -> nn.Module:
    """The submodule called ``name`` (dotted, as in ``named_modules()``)."""
    modules = dict(root.named_modules())
    if not isinstance(name, str) or name not in modules or name == "":
        raise ValueError(f"{where}: the model has no submodule {name!r}")
    return modules[name]


def set_submodule(root: nn.Module, name: str, new: nn.Module, where: str = "set_submodule") -> None:
    """Replace the submodule called ``name`` (dotted) of ``root`` by ``new``, in place."""
    get_submodule(root, name, where)
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
