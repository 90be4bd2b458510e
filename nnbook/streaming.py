"""Streaming keyword spotting: a continuous stream, two streaming models and detection metrics.

Chapter 9c builds a keyword spotter that runs *frame by frame*, the way an always-on
microphone feeds it, from these pieces:

* **The stream** (:func:`make_stream`): MNIST-1D patterns (Greydanus, 2020) laid end to
  end with short gaps of low-level noise between them, cut into frames of ``frame``
  samples.  Some digit classes are *keywords*; the others are distractors.  Each
  frame stands for ``frame_ms`` milliseconds of audio (10 ms, the usual hop of
  keyword-spotting front ends; Warden, 2018; Zhang et al., 2017).
* **Two models that can stream**: a GRU (Cho et al., 2014) whose hidden state is carried
  from frame to frame (:class:`KwsGRU`, :class:`StreamingGRU`), and a causal, dilated
  1-D CNN (van den Oord et al., 2016, WaveNet) whose per-layer inputs are kept in ring
  buffers so that each frame computes only the one new output of every layer
  (:class:`KwsCNN`, :class:`StreamingCNN`).  Both also run *offline* on a whole
  sequence at once; the streaming form must give the same scores.
* **Detection metrics** (:func:`detect`, :func:`score_detections`,
  :func:`choose_threshold`): a detection is a rising crossing of a score threshold;
  it is a *hit* when it falls inside a keyword (or shortly after it), otherwise a
  *false alarm*; the *delay* is how many frames after the keyword's last frame the
  detection came.  False alarms are reported per hour of stream.
* **Per-frame latency** (:func:`frame_latency`) and the arithmetic cost per frame
  (:func:`macs_per_frame`).

Shapes: a stream is a float32 tensor ``(T, frame)``; a batch of streams
``(B, T, frame)``; the models return one logit per frame, ``(B, T)``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._checks import _given, check_float, check_int, check_model, check_tensor

__all__ = [
    "Stream", "make_stream", "chunks", "KwsGRU", "KwsCNN", "StreamingGRU", "StreamingCNN", "streamer",
    "detect", "score_detections", "choose_threshold", "frame_latency", "macs_per_frame",
    "Int8Layer", "int8_model",
]


# ------------------------------------------------------------------ the stream
@dataclass(frozen=True)
class Stream:
    """A continuous signal cut into frames, with where the keywords are.

    Attributes:
        frames: float32 tensor ``(T, frame)``: frame ``t`` holds samples ``t*frame .. (t+1)*frame - 1``.
        target: float32 tensor ``(T,)``: 1 on the frames a detector should fire on (the last
            ``pos_before`` frames of a keyword and the ``pos_after`` frames after it), else 0.
        spans: int64 tensor ``(K, 2)``: ``[start, end)`` frame indices of every keyword.
        frame_ms: milliseconds of signal per frame.
    """

    frames: torch.Tensor
    target: torch.Tensor
    spans: torch.Tensor
    frame_ms: float

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def hours(self) -> float:
        """Duration of the stream in hours (``n_frames * frame_ms``)."""
        return self.n_frames * self.frame_ms / 3.6e6

    def __repr__(self) -> str:
        return (f"Stream({self.n_frames} frames of {self.frames.shape[1]} samples, "
                f"{self.n_frames * self.frame_ms / 1000:.1f} s, {len(self.spans)} keywords)")


def make_stream(x: torch.Tensor, y: torch.Tensor, keywords, *, frame: int = 4, gap: tuple[int, int] = (2, 8),
                noise_std: float = 0.3, frame_ms: float = 10.0, pos_before: int = 2, pos_after: int = 2,
                seed: int = 0) -> Stream:
    """Lay patterns end to end, with random gaps of noise between them, and cut the result into frames.

    The patterns are taken in a random order (seeded); before each one comes a gap of
    ``gap[0] .. gap[1]`` frames of Gaussian noise (standard deviation ``noise_std``).
    The patterns whose class is in ``keywords`` are the keywords; the others are
    distractors the detector must ignore.

    Args:
        x: float tensor ``(N, L)``, one pattern per row; ``L`` must be a multiple of ``frame``.
        y: integer labels ``(N,)``.
        keywords: the classes that count as keywords (a non-empty collection of ints).
        frame: samples per frame, ``>= 1``.
        gap: the smallest and largest gap between patterns, in frames (``0 <= gap[0] <= gap[1]``).
        noise_std: standard deviation of the background noise in the gaps, ``>= 0``.
        frame_ms: milliseconds of signal per frame, ``> 0``.
        pos_before, pos_after: the target is 1 on the last ``pos_before`` frames of a keyword
            and the first ``pos_after`` frames after it.
        seed: the order of the patterns and the gaps.

    Returns:
        A :class:`Stream`.

    Raises:
        TypeError: ``x``/``y`` are not tensors; ``keywords`` is not a collection of ints.
        ValueError: shapes disagree, ``L`` is not a multiple of ``frame``, a bad gap or number.

    Examples:
        >>> x, y = torch.randn(6, 8), torch.tensor([0, 1, 0, 2, 1, 0])
        >>> s = make_stream(x, y, keywords=[1], frame=4, gap=(1, 1))
        >>> s.frames.shape, len(s.spans)
        (torch.Size([18, 4]), 2)
    """
    where = "make_stream"
    x = check_tensor(x, where, "x", ndim=2, floating=True, finite=True)
    y = check_tensor(y, where, "y", ndim=1)
    if y.is_floating_point() or len(y) != len(x):
        raise ValueError(f"{where}: y must be integer labels of shape ({len(x)},), got {_given(y)}")
    if isinstance(keywords, (int, str)) or not hasattr(keywords, "__iter__"):
        raise TypeError(f"{where}: keywords must be a collection of class numbers, got {_given(keywords)}")
    keywords = sorted({check_int(k, where, "a keyword class") for k in keywords})
    if not keywords:
        raise ValueError(f"{where}: keywords must name at least one class, got none")
    frame = check_int(frame, where, "frame", minimum=1)
    if x.shape[1] % frame:
        raise ValueError(f"{where}: the pattern length {x.shape[1]} must be a multiple of frame={frame}")
    if not (isinstance(gap, (tuple, list)) and len(gap) == 2):
        raise TypeError(f"{where}: gap must be a pair (min, max) of frame counts, got {_given(gap)}")
    g0, g1 = (check_int(g, where, "gap", minimum=0) for g in gap)
    if g0 > g1:
        raise ValueError(f"{where}: gap must be (min, max) with min <= max, got {tuple(gap)}")
    noise_std = check_float(noise_std, where, "noise_std", minimum=0.0)
    frame_ms = check_float(frame_ms, where, "frame_ms", minimum=0.0, min_open=True)
    pos_before = check_int(pos_before, where, "pos_before", minimum=0)
    pos_after = check_int(pos_after, where, "pos_after", minimum=0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    gaps = rng.integers(g0, g1 + 1, size=len(x))
    noise = torch.as_tensor(rng.standard_normal(int(gaps.sum()) * frame), dtype=torch.float32) * noise_std
    pieces, spans, t, used = [], [], 0, 0
    is_kw = torch.isin(y, torch.tensor(keywords, dtype=y.dtype))
    plen = x.shape[1] // frame
    for i, g in zip(order, gaps):
        pieces.append(noise[used: used + g * frame])
        used += g * frame
        t += int(g)
        pieces.append(x[i].float())
        if bool(is_kw[i]):
            spans.append((t, t + plen))
        t += plen
    frames = torch.cat(pieces).reshape(-1, frame).contiguous()
    target = torch.zeros(len(frames))
    for s, e in spans:
        target[max(s, e - pos_before): min(len(frames), e + pos_after)] = 1.0
    spans_t = torch.tensor(spans, dtype=torch.int64).reshape(-1, 2)
    return Stream(frames, target, spans_t, frame_ms)


def chunks(stream: Stream, length: int = 64, stride: int | None = None):
    """Cut a stream into overlapping training chunks.

    Args:
        stream: a :class:`Stream`.
        length: frames per chunk, ``>= 1``.
        stride: frames between chunk starts (``length // 2`` by default).

    Returns:
        ``(x, t)``: float32 tensors ``(n, length, frame)`` and ``(n, length)``.

    Raises:
        TypeError: ``stream`` is not a :class:`Stream`.
        ValueError: ``length`` or ``stride`` < 1, or the stream is shorter than ``length``.

    Examples:
        >>> s = make_stream(torch.randn(20, 8), torch.arange(20) % 3, keywords=[0], frame=4)
        >>> x, t = chunks(s, length=8)
        >>> x.shape[1:], t.shape[1:]
        (torch.Size([8, 4]), torch.Size([8]))
    """
    if not isinstance(stream, Stream):
        raise TypeError(f"chunks: stream must be an nnbook.streaming.Stream, got {_given(stream)}")
    length = check_int(length, "chunks", "length", minimum=1)
    stride = max(1, length // 2) if stride is None else check_int(stride, "chunks", "stride", minimum=1)
    if stream.n_frames < length:
        raise ValueError(f"chunks: the stream has {stream.n_frames} frames, fewer than length={length}")
    starts = torch.arange(0, stream.n_frames - length + 1, stride)
    idx = starts[:, None] + torch.arange(length)[None, :]
    return stream.frames[idx], stream.target[idx]


# ------------------------------------------------------------------ the models
def _check_batch(x, where: str, frame: int) -> torch.Tensor:
    x = check_tensor(x, where, "x", ndim=3, floating=True)
    if x.shape[2] != frame:
        raise ValueError(f"{where}: x must have shape (batch, time, {frame}), got {tuple(x.shape)}")
    return x


class KwsGRU(nn.Module):
    """A one-layer GRU keyword spotter: one logit per frame.

    The cell is the GRU of Cho et al. (2014) in PyTorch's layout (gates ``r, z, n`` stacked
    in that order): ``r = σ(W_ir x + b_ir + W_hr h + b_hr)``, ``z = σ(W_iz x + ... )``,
    ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``, ``h' = (1 - z) ⊙ n + z ⊙ h``.
    It is built from two ``nn.Linear`` layers (``ih``: input to the three gates, ``hh``:
    hidden state to the three gates) so that :func:`nnbook.quantize.quantize_model` can
    quantize it; the offline forward applies ``ih`` to all frames at once and loops over
    time only for ``hh``.

    Args:
        frame: input features per frame (samples per frame), ``>= 1``.
        hidden: hidden units, ``>= 1``.

    Shapes:
        ``forward``: ``(B, T, frame)`` -> logits ``(B, T)``.

    Raises:
        TypeError, ValueError: bad sizes, or an input that is not ``(B, T, frame)`` floats.

    Examples:
        >>> KwsGRU(frame=4, hidden=8)(torch.zeros(2, 5, 4)).shape
        torch.Size([2, 5])
    """

    def __init__(self, frame: int = 4, hidden: int = 32):
        super().__init__()
        self.frame = check_int(frame, "KwsGRU", "frame", minimum=1)
        self.hidden = check_int(hidden, "KwsGRU", "hidden", minimum=1)
        self.ih = nn.Linear(frame, 3 * hidden)
        self.hh = nn.Linear(hidden, 3 * hidden)
        self.head = nn.Linear(hidden, 1)

    def cell(self, gi: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One GRU step: ``gi = ih(x_t)`` ``(B, 3H)`` and ``h`` ``(B, H)`` -> the new ``h`` ``(B, H)``."""
        gh = self.hh(h)
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1 - z) * n + z * h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_batch(x, "KwsGRU", self.frame)
        gi = self.ih(x)  # all frames at once: (B, T, 3H)
        h = x.new_zeros(x.shape[0], self.hidden)
        states = []
        for t in range(x.shape[1]):
            h = self.cell(gi[:, t], h)
            states.append(h)
        return self.head(torch.stack(states, 1)).squeeze(-1)


class KwsCNN(nn.Module):
    """A causal, dilated 1-D CNN keyword spotter: one logit per frame.

    Every convolution is padded on the left only (``(kernel - 1) * dilation`` zeros), so
    output ``t`` depends on frames ``<= t``: the network can run on a live stream.
    Dilations that double (1, 2, 4, ...) grow the receptive field exponentially
    (van den Oord et al., 2016): ``1 + (kernel - 1) * sum(dilations)`` frames.

    Args:
        frame: input channels (samples per frame), ``>= 1``.
        channels: channels of every hidden layer, ``>= 1``.
        kernel: kernel size of every layer, ``>= 1``.
        dilations: one dilation per layer (ints ``>= 1``).

    Shapes:
        ``forward``: ``(B, T, frame)`` -> logits ``(B, T)``.

    Raises:
        TypeError, ValueError: bad sizes, or an input that is not ``(B, T, frame)`` floats.

    Examples:
        >>> m = KwsCNN(frame=4, channels=8, kernel=3, dilations=(1, 2))
        >>> m(torch.zeros(2, 5, 4)).shape, m.receptive_field
        (torch.Size([2, 5]), 7)
    """

    def __init__(self, frame: int = 4, channels: int = 32, kernel: int = 3, dilations=(1, 2, 4)):
        super().__init__()
        self.frame = check_int(frame, "KwsCNN", "frame", minimum=1)
        self.channels = channels = check_int(channels, "KwsCNN", "channels", minimum=1)
        self.kernel = check_int(kernel, "KwsCNN", "kernel", minimum=1)
        if isinstance(dilations, (int, str)) or not hasattr(dilations, "__iter__"):
            raise TypeError(f"KwsCNN: dilations must be a sequence of ints, got {_given(dilations)}")
        self.dilations = tuple(check_int(d, "KwsCNN", "a dilation", minimum=1) for d in dilations)
        if not self.dilations:
            raise ValueError("KwsCNN: dilations must name at least one layer, got none")
        sizes = [frame] + [channels] * len(self.dilations)
        self.convs = nn.ModuleList(nn.Conv1d(sizes[i], sizes[i + 1], self.kernel, dilation=d)
                                   for i, d in enumerate(self.dilations))
        self.head = nn.Linear(channels, 1)

    @property
    def receptive_field(self) -> int:
        """Frames that one output depends on."""
        return 1 + (self.kernel - 1) * sum(self.dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_batch(x, "KwsCNN", self.frame).transpose(1, 2)  # (B, frame, T)
        for conv, d in zip(self.convs, self.dilations):
            x = F.relu(conv(F.pad(x, ((self.kernel - 1) * d, 0))))
        return self.head(x.transpose(1, 2)).squeeze(-1)


# ------------------------------------------------------------------ streaming wrappers
class _Streamer:
    """Common part of the streaming wrappers: frame checks, ``reset`` and ``run``."""

    def __init__(self, model: nn.Module, cls, where: str):
        check_model(model, where)
        if not isinstance(model, cls):
            raise TypeError(f"{where}: model must be a {cls.__name__}, got {type(model).__name__}")
        self.model = model.eval()
        self.frame = model.frame
        self._where = where
        self.reset()

    def _check_frame(self, frame) -> torch.Tensor:
        if not isinstance(frame, torch.Tensor):
            raise TypeError(f"{self._where}.step: a frame must be a torch.Tensor of shape ({self.frame},), "
                            f"got {_given(frame)}")
        if not frame.is_floating_point():
            raise TypeError(f"{self._where}.step: a frame must be floating point, got dtype {frame.dtype}")
        if tuple(frame.shape) != (self.frame,):
            raise ValueError(f"{self._where}.step: expected a frame of shape ({self.frame},) "
                             f"({self.frame} samples), got shape {tuple(frame.shape)}")
        return frame

    @torch.no_grad()
    def run(self, frames: torch.Tensor) -> torch.Tensor:
        """Feed ``frames`` ``(T, frame)`` one at a time (state carried on); returns the logits ``(T,)``."""
        frames = check_tensor(frames, f"{self._where}.run", "frames", ndim=2, floating=True)
        return torch.stack([self.step(f) for f in frames])


class StreamingGRU(_Streamer):
    """Run a :class:`KwsGRU` one frame at a time, carrying its hidden state.

    Each :meth:`step` costs one ``ih`` and one ``hh`` matrix-vector product, whatever
    the stream's length so far.

    Raises:
        TypeError: ``model`` is not a :class:`KwsGRU`; (``step``) a frame that is not a float tensor.
        ValueError: (``step``) a frame whose shape is not ``(frame,)``.

    Examples:
        >>> m = KwsGRU(frame=4, hidden=8)
        >>> x = torch.randn(1, 30, 4)
        >>> s = StreamingGRU(m)
        >>> torch.allclose(s.run(x[0]), m(x)[0], atol=1e-5)
        True
    """

    def __init__(self, model: KwsGRU):
        super().__init__(model, KwsGRU, "StreamingGRU")

    def reset(self) -> None:
        """Forget the past: hidden state back to zeros."""
        self.h = torch.zeros(1, self.model.hidden)

    @torch.no_grad()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        """Consume one frame ``(frame,)``; return its logit (a 0-d tensor)."""
        x = self._check_frame(frame)[None]
        self.h = self.model.cell(self.model.ih(x), self.h)
        return self.model.head(self.h)[0, 0]


class StreamingCNN(_Streamer):
    """Run a :class:`KwsCNN` one frame at a time with one ring buffer per layer.

    Layer ``l`` (kernel ``k``, dilation ``d``) needs its last ``(k - 1) * d + 1`` inputs.
    They live in a ring buffer ``(channels_in, (k - 1) * d + 1)`` whose write position
    moves by one per frame; a step writes the newest input, reads the window in time
    order, and computes the *one* new output of the layer (instead of the whole sequence).
    Zeros at the start play the role of the offline forward's left padding.

    Raises:
        TypeError: ``model`` is not a :class:`KwsCNN`; (``step``) a frame that is not a float tensor.
        ValueError: (``step``) a frame whose shape is not ``(frame,)``.

    Examples:
        >>> m = KwsCNN(frame=4, channels=8, dilations=(1, 2, 4))
        >>> x = torch.randn(1, 30, 4)
        >>> torch.allclose(StreamingCNN(m).run(x[0]), m(x)[0], atol=1e-5)
        True
    """

    def __init__(self, model: KwsCNN):
        super().__init__(model, KwsCNN, "StreamingCNN")

    def reset(self) -> None:
        """Forget the past: every ring buffer back to zeros."""
        m = self.model
        sizes = [m.frame] + [m.channels] * (len(m.convs) - 1)
        self.lengths = [(m.kernel - 1) * d + 1 for d in m.dilations]
        self.buffers = [torch.zeros(c, n) for c, n in zip(sizes, self.lengths)]
        self.pos = [0] * len(self.buffers)
        self._order = [torch.arange(1, n + 1) for n in self.lengths]  # oldest .. newest, from pos 0

    @torch.no_grad()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        """Consume one frame ``(frame,)``; return its logit (a 0-d tensor)."""
        v = self._check_frame(frame)
        for i, conv in enumerate(self.model.convs):
            buf, n, p = self.buffers[i], self.lengths[i], self.pos[i]
            buf[:, p] = v                                   # write the newest input
            window = buf[:, (self._order[i] + p) % n]      # read oldest .. newest
            self.pos[i] = (p + 1) % n
            v = F.relu(conv(window[None]))[0, :, 0]         # the one new output of this layer
        return self.model.head(v[None])[0, 0]


def streamer(model: nn.Module):
    """The streaming wrapper that fits ``model``: :class:`StreamingGRU` or :class:`StreamingCNN`.

    Raises:
        TypeError: ``model`` is neither a :class:`KwsGRU` nor a :class:`KwsCNN`.
    """
    if isinstance(model, KwsGRU):
        return StreamingGRU(model)
    if isinstance(model, KwsCNN):
        return StreamingCNN(model)
    raise TypeError(f"streamer: model must be a KwsGRU or a KwsCNN, got {_given(model)}")


# ------------------------------------------------------------------ detection metrics
def detect(scores, threshold: float, refractory: int = 10) -> torch.Tensor:
    """Frames where the score rises to ``threshold`` or above, at most one per ``refractory`` frames.

    Args:
        scores: 1-D tensor ``(T,)`` of per-frame scores (probabilities or logits).
        threshold: the firing level, same units as ``scores``.
        refractory: after a detection, the next ``refractory - 1`` frames cannot fire.

    Returns:
        int64 tensor of detection frame indices, increasing.

    Raises:
        TypeError, ValueError: ``scores`` is not a 1-D float tensor; bad threshold or refractory.

    Examples:
        >>> detect(torch.tensor([0., .9, .8, .1, .95, 0., 0., .9]), 0.5, refractory=4)
        tensor([1, 7])
    """
    scores = check_tensor(scores, "detect", "scores", ndim=1, floating=True, finite=True)
    threshold = check_float(threshold, "detect", "threshold")
    refractory = check_int(refractory, "detect", "refractory", minimum=1)
    above = (scores >= threshold).numpy()
    rising = np.flatnonzero(above & ~np.concatenate([[False], above[:-1]]))
    out, last = [], -refractory
    for t in rising:
        if t - last >= refractory:
            out.append(int(t))
            last = t
    return torch.tensor(out, dtype=torch.int64)


def score_detections(detections: torch.Tensor, stream: Stream, tolerance: int = 5) -> dict:
    """Match detections to keywords: hits, misses, false alarms and delays.

    Keywords are matched in time order. A keyword ``[start, end)`` is *hit* when a detection
    not yet matched falls in ``[start, end + tolerance)``; the first such detection is its
    detection, and its *delay* is ``detection - (end - 1)`` frames (0: on the keyword's last
    frame; negative: before the keyword finished).  Further detections inside the keyword itself
    repeat it and are ignored; every other detection is a *false alarm* (a second detection
    just after a keyword that was already hit included: the device would wake twice).  A detection counts for one keyword at most, so
    ``hits + false_alarms <= len(detections)``.

    Args:
        detections: int64 tensor of frame indices (from :func:`detect`).
        stream: the :class:`Stream` the detections were made on.
        tolerance: frames after a keyword's end during which a detection still counts, ``>= 0``.

    Returns:
        ``{"hits", "keywords", "hit_rate", "false_alarms", "fa_per_hour", "delays_ms"}``; ``hit_rate``
        is a fraction, ``fa_per_hour`` false alarms per hour of stream, ``delays_ms`` a float
        NumPy array (one per hit, in ms).

    Raises:
        TypeError, ValueError: bad arguments.

    Examples:
        >>> s = make_stream(torch.randn(4, 8), torch.tensor([1, 0, 1, 0]), keywords=[1], gap=(0, 0))
        >>> r = score_detections(s.spans[:, 1] - 1, s)
        >>> r["hit_rate"], r["false_alarms"], r["delays_ms"].tolist()
        (1.0, 0, [0.0, 0.0])
    """
    if not isinstance(stream, Stream):
        raise TypeError(f"score_detections: stream must be an nnbook.streaming.Stream, got {_given(stream)}")
    detections = check_tensor(detections, "score_detections", "detections", ndim=1, nonempty=False)
    if detections.is_floating_point():
        raise TypeError(f"score_detections: detections must be integer frame indices, got dtype {detections.dtype}")
    tolerance = check_int(tolerance, "score_detections", "tolerance", minimum=0)
    det = np.sort(detections.numpy())
    used = np.zeros(len(det), dtype=bool)
    delays = []
    for s, e in stream.spans.tolist():
        lo, hi = np.searchsorted(det, s), np.searchsorted(det, e + tolerance)
        free = lo + np.flatnonzero(~used[lo:hi])  # a detection counts for one keyword at most
        if len(free):
            delays.append((det[free[0]] - (e - 1)) * stream.frame_ms)
            # the rest of this keyword's window is a repeat of the same keyword, not a false alarm,
            # unless it falls inside the next keyword
            nxt = np.searchsorted(det, e)
            used[free[0]:max(free[0] + 1, nxt)] = True
    n_kw = len(stream.spans)
    fa = int((~used).sum())
    return {"hits": len(delays), "keywords": n_kw, "hit_rate": len(delays) / n_kw if n_kw else float("nan"),
            "false_alarms": fa, "fa_per_hour": fa / stream.hours, "delays_ms": np.asarray(delays, dtype=float)}


def choose_threshold(scores: torch.Tensor, stream: Stream, min_hit_rate: float = 0.95, thresholds=None,
                     refractory: int = 10, tolerance: int = 5) -> float:
    """The highest threshold that still detects ``min_hit_rate`` of the keywords of a (validation) stream.

    This fixes the *operating point* by the hit rate and then keeps false alarms as few as that
    allows (a higher threshold never adds false alarms from a distractor it already ignored).
    When no candidate reaches ``min_hit_rate``, the lowest candidate is returned.

    Args:
        scores: per-frame scores ``(T,)`` of the validation stream.
        stream: the validation :class:`Stream`.
        min_hit_rate: the fraction of keywords to detect, in ``(0, 1]``.
        thresholds: candidates (default: 0.02, 0.04, ..., 0.98 — for probabilities).
        refractory, tolerance: as in :func:`detect` and :func:`score_detections`.

    Returns:
        The chosen threshold (a float).

    Raises:
        TypeError, ValueError: bad scores, stream, rate or candidates.

    Examples:
        >>> s = Stream(torch.zeros(30, 4), torch.zeros(30), torch.tensor([[2, 4], [15, 17]]), 10.0)
        >>> scores = torch.zeros(30)
        >>> scores[[3, 16, 25]] = torch.tensor([0.8, 0.6, 0.3])   # two keywords and a distractor
        >>> choose_threshold(scores, s)
        0.6
    """
    min_hit_rate = check_float(min_hit_rate, "choose_threshold", "min_hit_rate", minimum=0.0, maximum=1.0,
                               min_open=True)
    grid = np.round(np.arange(0.02, 0.981, 0.02), 2) if thresholds is None else np.asarray(thresholds, float)
    if grid.ndim != 1 or len(grid) == 0:
        raise ValueError(f"choose_threshold: thresholds must be a non-empty 1-D list, got {_given(thresholds)}")
    grid = np.sort(grid)
    best = float(grid[0])
    for th in grid:
        if score_detections(detect(scores, float(th), refractory), stream, tolerance)["hit_rate"] >= min_hit_rate:
            best = float(th)
    return best


# ------------------------------------------------------------------ cost
def frame_latency(stream_model, frames: torch.Tensor, warmup: int = 20) -> np.ndarray:
    """Wall-clock milliseconds of every :meth:`step` call over ``frames``, after ``warmup`` untimed steps.

    Args:
        stream_model: a :class:`StreamingGRU` or :class:`StreamingCNN` (reset first).
        frames: ``(T, frame)`` float tensor, ``T > warmup``.
        warmup: untimed first steps, ``>= 0``.

    Returns:
        float NumPy array ``(T - warmup,)`` of milliseconds (depends on the machine and its load).

    Raises:
        TypeError: ``stream_model`` is not a streaming wrapper.
        ValueError: too few frames.
    """
    if not isinstance(stream_model, _Streamer):
        raise TypeError(f"frame_latency: stream_model must be a StreamingGRU or StreamingCNN, got {_given(stream_model)}")
    frames = check_tensor(frames, "frame_latency", "frames", ndim=2, floating=True)
    warmup = check_int(warmup, "frame_latency", "warmup", minimum=0)
    if len(frames) <= warmup:
        raise ValueError(f"frame_latency: need more than warmup={warmup} frames, got {len(frames)}")
    stream_model.reset()
    out = []
    with torch.inference_mode():
        for i, f in enumerate(frames):
            t0 = time.perf_counter()
            stream_model.step(f)
            if i >= warmup:
                out.append((time.perf_counter() - t0) * 1e3)
    stream_model.reset()
    return np.asarray(out)


def macs_per_frame(model: nn.Module) -> int:
    """Multiply-accumulates one streaming step costs (weights only; gates and activations not counted).

    GRU: ``3H * (frame + H) + H``; CNN: ``sum(c_out * c_in * kernel) + channels`` (ring buffers
    make every layer compute one output per frame).

    Raises:
        TypeError: ``model`` is neither a :class:`KwsGRU` nor a :class:`KwsCNN`.

    Examples:
        >>> macs_per_frame(KwsGRU(frame=4, hidden=8))
        296
    """
    if isinstance(model, KwsGRU):
        h = model.hidden
        return 3 * h * (model.frame + h) + h
    if isinstance(model, KwsCNN):
        c, k, n = model.channels, model.kernel, len(model.convs)
        return model.frame * c * k + (n - 1) * c * c * k + c
    raise TypeError(f"macs_per_frame: model must be a KwsGRU or a KwsCNN, got {_given(model)}")


# ------------------------------------------------------------------ int8
class Int8Layer(nn.Module):
    """A calibrated :class:`nnbook.quantize.QuantLayer` frozen for integer inference.

    The weight is stored as int8 codes ``w_q`` with one float32 scale ``s_w`` per output
    channel (symmetric grid, zero point 0); the input is rounded to its calibrated uint8 grid,
    ``x_q = clamp(round(x / s_x) + z_x, 0, 255)``.  The layer then computes what an integer
    kernel computes (Jacob et al., 2018): the integer accumulation ``acc = sum (x_q - z_x) * w_q``
    (exact: every term and partial sum is an integer below 2^24, so float32 holds it without
    rounding, in any summation order) and rescales it once, ``acc * s_x * s_w + bias``.
    Because the accumulation is exact, the layer gives bit-identical outputs whether it runs on
    one frame or on a whole sequence, which makes streaming equal offline execution exactly.

    Attributes:
        codes: int8 tensor, the weight's shape.  scale: float32 ``(out,)``.
        bias: float32 or ``None``.  act_scale, act_zero_point: the input grid (uint8, asymmetric).

    Raises:
        TypeError: ``qlayer`` is not a QuantLayer with 8-bit symmetric weights.
        ValueError: its input range was not calibrated (or it has no input quantization), or the
            layer is so wide that the integer accumulation could exceed 2^24.
    """

    def __init__(self, qlayer: nn.Module):
        super().__init__()
        from .quantize import QuantLayer, qparams, quantize

        if not isinstance(qlayer, QuantLayer) or qlayer.w_bits != 8 or not qlayer.symmetric \
                or qlayer.scheme != "affine":
            raise TypeError(f"Int8Layer: expected a QuantLayer with 8-bit symmetric affine weights, got {_given(qlayer)}")
        if qlayer.act_bits != 8 or bool(torch.isnan(qlayer.act_lo)):
            raise ValueError("Int8Layer: the QuantLayer needs 8-bit inputs calibrated by nnbook.quantize.calibrate")
        lay = qlayer.layer
        w = lay.weight.detach()
        if w[0].numel() * 255 * 127 >= 2 ** 24:
            raise ValueError(f"Int8Layer: {w[0].numel()} inputs per output could overflow an exact float32 "
                             "accumulation (at most 518)")
        axis = 0 if qlayer.per_channel else None
        scale, zp = qparams(w, bits=8, symmetric=True, axis=axis)
        self.register_buffer("codes", quantize(w, scale, zp, bits=8, symmetric=True, axis=axis, storage=True))
        self.register_buffer("scale", scale.float().reshape(-1).expand(w.shape[0]).clone())
        self.register_buffer("bias", None if lay.bias is None else lay.bias.detach().clone())
        a_scale, a_zp = qparams(torch.stack([qlayer.act_lo, qlayer.act_hi]), bits=8, symmetric=False)
        self.act_scale, self.act_zero_point = float(a_scale), int(a_zp)
        self.kind = "linear" if isinstance(lay, nn.Linear) else "conv1d"
        self.conv_args = None if self.kind == "linear" else (lay.stride, lay.padding, lay.dilation, lay.groups)
        # float copies for the exact integer arithmetic (not saved: they follow from codes and scales)
        self.register_buffer("_codes_f", self.codes.float(), persistent=False)
        self.register_buffer("_out_scale", self.scale * self.act_scale, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zp = self.act_zero_point
        xq = torch.clamp(torch.round(x / self.act_scale) + zp, 0, 255) - zp  # integers in [-255, 255]
        if self.kind == "linear":
            acc = F.linear(xq, self._codes_f)                    # exact integer sums
            out = acc * self._out_scale
            return out if self.bias is None else out + self.bias
        acc = F.conv1d(xq, self._codes_f, None, *self.conv_args)
        out = acc * self._out_scale[:, None]
        return out if self.bias is None else out + self.bias[:, None]

    def extra_repr(self) -> str:
        return f"{self.kind}, weight {tuple(self.codes.shape)} int8, input uint8 scale={self.act_scale:.3g}"


def int8_model(model: nn.Module, calibration: torch.Tensor) -> tuple[nn.Module, int]:
    """Static int8 post-training quantization of a :class:`KwsGRU` or :class:`KwsCNN`.

    Uses chapter 5's tools: :func:`nnbook.quantize.quantize_model` (8-bit per-channel
    symmetric weights, 8-bit asymmetric inputs of every Linear/Conv1d) and
    :func:`nnbook.quantize.calibrate` (min–max input ranges from ``calibration``), then
    freezes every layer into an :class:`Int8Layer`.

    Args:
        model: the float model (not changed).
        calibration: float tensor ``(N, T, frame)`` of training chunks.

    Returns:
        ``(int8 model, bytes)``: the model (same class, eval mode) and its storage in bytes
        (:func:`nnbook.quantize.quantized_size_bytes`: int8 codes + scales + float32 biases + ranges).

    Raises:
        TypeError: ``model`` is neither a KwsGRU nor a KwsCNN; ``calibration`` is not a float tensor.
        ValueError: ``calibration`` is not ``(N, T, frame)``.

    Examples:
        >>> m = KwsCNN(frame=4, channels=8, dilations=(1, 2))
        >>> q, nbytes = int8_model(m, torch.randn(4, 16, 4))
        >>> nbytes < 4 * sum(p.numel() for p in m.parameters())
        True
    """
    from ._checks import set_submodule
    from .quantize import QuantLayer, calibrate, quantize_model, quantized_size_bytes

    if not isinstance(model, (KwsGRU, KwsCNN)):
        raise TypeError(f"int8_model: model must be a KwsGRU or a KwsCNN, got {_given(model)}")
    _check_batch(calibration, "int8_model", model.frame)
    q = quantize_model(model, w_bits=8, symmetric=True, per_channel=True, act_bits=8, act_symmetric=False).eval()
    calibrate(q, calibration)
    nbytes = quantized_size_bytes(q)
    for name, m in [(n, m) for n, m in q.named_modules() if isinstance(m, QuantLayer)]:
        set_submodule(q, name, Int8Layer(m), "int8_model")
    return q, nbytes
