"""Bad input and faults in nnbook.quantize, nnbook.prune, nnbook.measure, nnbook.cache and the models (issue 16).

Every bad input must raise ``TypeError``/``ValueError`` (or ``FileNotFoundError``) whose message starts
with the public function's name; no call may return silent nonsense; a failed call leaves the model
exactly as it was (parameters, buffers and train/eval mode).
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from nnbook import measure, models
from nnbook import prune as P
from nnbook import quantize as Q

torch.set_num_threads(1)
NAN, INF = float("nan"), float("inf")
X = torch.randn(4, 6)
W = torch.randn(3, 4)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def _nan_net():
    net = _net()
    with torch.no_grad():
        net[1].weight[0, 0] = NAN
    return net


def _with_nan(t):
    t = t.clone()
    t.view(-1)[0] = NAN
    return t


# (label, call, exception, message start)
CASES = [
    # --- quantize: scale / zero point / NaN / flags
    ("quantize scale 0", lambda: Q.quantize(X, 0.0, 0), ValueError, "quantize: scale must be > 0"),
    ("quantize scale <0", lambda: Q.quantize(X, -0.1, 0), ValueError, "quantize: scale must be > 0"),
    ("quantize scale nan", lambda: Q.quantize(X, NAN, 0), ValueError, "quantize: scale must be finite"),
    ("quantize scale inf", lambda: Q.quantize(X, INF, 0), ValueError, "quantize: scale must be finite"),
    ("quantize scale None", lambda: Q.quantize(X, None, 0), TypeError, "quantize: scale must be"),
    ("quantize scale str", lambda: Q.quantize(X, "0.1", 0), TypeError, "quantize: scale must be"),
    ("quantize zp 300", lambda: Q.quantize(X, 0.1, 300, symmetric=False), ValueError, "quantize: zero_point must be in"),
    ("quantize zp 0.5", lambda: Q.quantize(X, 0.1, 0.5, symmetric=False), ValueError, "quantize: zero_point must hold integers"),
    ("quantize zp nan", lambda: Q.quantize(X, 0.1, NAN), ValueError, "quantize: zero_point must be finite"),
    ("quantize zp sym out", lambda: Q.quantize(X, 0.1, 200, bits=8), ValueError, "quantize: zero_point must be in"),
    ("quantize x nan", lambda: Q.quantize(_with_nan(X), 0.1, 0), ValueError, "quantize: x must hold only finite"),
    ("quantize x int", lambda: Q.quantize(torch.arange(4), 0.1, 0), TypeError, "quantize: x must be a floating"),
    ("quantize x list", lambda: Q.quantize([1.0, 2.0], 0.1, 0), TypeError, "quantize: x must be a torch.Tensor"),
    ("quantize x numpy", lambda: Q.quantize(np.ones(3), 0.1, 0), TypeError, "quantize: x must be a torch.Tensor"),
    ("quantize x empty", lambda: Q.quantize(torch.ones(0), 0.1, 0), ValueError, "quantize: x must not be empty"),
    ("quantize sym 'no'", lambda: Q.quantize(X, 0.1, 0, symmetric="no"), TypeError, "quantize: symmetric must be True or False"),
    ("quantize storage 1", lambda: Q.quantize(X, 0.1, 0, storage=1), TypeError, "quantize: storage must be True or False"),
    ("quantize scale wrong length", lambda: Q.quantize(X, torch.ones(5), 0, axis=0), ValueError, "quantize: scale must be"),
    ("quantize scale vector no axis", lambda: Q.quantize(X, torch.ones(4), 0), ValueError, "quantize: scale must be a scalar"),
    ("quantize scale channel 0", lambda: Q.quantize(X, torch.tensor([1.0, 0.0, 1.0, 1.0]), 0, axis=0), ValueError, "quantize: scale must be > 0"),
    ("quantize bits float", lambda: Q.quantize(X, 0.1, 0, bits=8.0), TypeError, "quantize: bits must be an int"),
    ("quantize bits 1", lambda: Q.quantize(X, 0.1, 0, bits=1), ValueError, "quantize: bits must be in 2..16"),
    ("quantize axis 5", lambda: Q.quantize(X, 0.1, 0, axis=5), ValueError, "quantize: axis must be in"),
    ("quantize axis str", lambda: Q.quantize(X, 0.1, 0, axis="0"), TypeError, "quantize: axis must be an int"),
    ("dequantize float q", lambda: Q.dequantize(X, 0.1, 0), TypeError, "dequantize: q must be an integer tensor"),
    ("dequantize scale 0", lambda: Q.dequantize(torch.arange(3), 0.0, 0), ValueError, "dequantize: scale must be > 0"),
    ("dequantize zp 0.5", lambda: Q.dequantize(torch.arange(3), 0.1, 0.5), ValueError, "dequantize: zero_point must hold integers"),
    ("dequantize None", lambda: Q.dequantize(None, 0.1, 0), TypeError, "dequantize: q must be a torch.Tensor"),
    ("qparams nan", lambda: Q.qparams(_with_nan(X)), ValueError, "qparams: x must hold only finite"),
    ("qparams inf", lambda: Q.qparams(X / 0), ValueError, "qparams: x must hold only finite"),
    ("qparams sym 'no'", lambda: Q.qparams(X, symmetric="no"), TypeError, "qparams: symmetric must be True or False"),
    ("qparams lo nan", lambda: Q.qparams(X, lo=NAN, hi=1.0), ValueError, "qparams: lo must be finite"),
    ("qparams lo>hi", lambda: Q.qparams(X, lo=1.0, hi=0.0), ValueError, "qparams: the range must have lo <= hi"),
    ("qparams only lo", lambda: Q.qparams(X, lo=0.0), ValueError, "qparams: give both lo and hi"),
    ("fake_quantize nan", lambda: Q.fake_quantize(_with_nan(X)), ValueError, "fake_quantize: x must hold only finite"),
    ("fake_quantize scale 0", lambda: Q.fake_quantize(X, scale=0.0, zero_point=0), ValueError, "fake_quantize: scale must be > 0"),
    ("fake_quantize only scale", lambda: Q.fake_quantize(X, scale=0.1), ValueError, "fake_quantize: give both scale"),
    ("fake_quantize sym 'no'", lambda: Q.fake_quantize(X, symmetric="no"), TypeError, "fake_quantize: symmetric must"),
    ("quantize_pow2 nan", lambda: Q.quantize_pow2(_with_nan(X)), ValueError, "quantize_pow2: x must hold only finite"),
    ("quantize_pow2 None", lambda: Q.quantize_pow2(None), TypeError, "quantize_pow2: x must be a torch.Tensor"),
    ("round_ste None", lambda: Q.round_ste(None), TypeError, "round_ste: x must be a torch.Tensor"),
    ("round_ste list", lambda: Q.round_ste([0.5]), TypeError, "round_ste: x must be a torch.Tensor"),
    ("round_ste int", lambda: Q.round_ste(torch.arange(3)), TypeError, "round_ste: x must be a floating"),
    ("qrange sym 'no'", lambda: Q.qrange(8, "no"), TypeError, "qrange: symmetric must be True or False"),
    ("QuantLayer sym 'no'", lambda: Q.QuantLayer(nn.Linear(2, 2), symmetric="no"), TypeError, "QuantLayer: symmetric must"),
    ("QuantLayer bad scheme", lambda: Q.QuantLayer(nn.Linear(2, 2), scheme="log"), ValueError, "QuantLayer: scheme must be one of"),
    ("QuantLayer LSTM", lambda: Q.QuantLayer(nn.LSTM(2, 2)), TypeError, "QuantLayer: expected one of"),
    ("quantize_model sym 'no'", lambda: Q.quantize_model(_net(), symmetric="no"), TypeError, "quantize_model: symmetric must be True or False"),
    ("quantize_model per_channel 1", lambda: Q.quantize_model(_net(), per_channel=1), TypeError, "quantize_model: per_channel must"),
    ("quantize_model fold 'yes'", lambda: Q.quantize_model(_net(), fold_bn="yes"), TypeError, "quantize_model: fold_bn must"),
    ("quantize_model act_bits 1", lambda: Q.quantize_model(_net(), act_bits=1), ValueError, "quantize_model: act_bits must be in 2..16"),
    ("quantize_model skip str", lambda: Q.quantize_model(_net(), skip="1"), TypeError, "quantize_model: skip must be"),
    ("quantize_model None", lambda: Q.quantize_model(None), TypeError, "quantize_model: model must be a torch.nn.Module"),
    ("quantize_model no layer", lambda: Q.quantize_model(nn.ReLU()), ValueError, "quantize_model: the model has no"),
    ("calibrate nan batch", lambda: Q.calibrate(Q.quantize_model(_net(), act_bits=8), _with_nan(torch.randn(4, 16))),
     ValueError, "calibrate: a calibration batch must hold only finite"),
    ("calibrate wrong shape", lambda: Q.calibrate(Q.quantize_model(_net(), act_bits=8), torch.randn(4, 5)),
     ValueError, "calibrate: the model cannot run on a batch of shape"),
    ("calibrate int batch", lambda: Q.calibrate(Q.quantize_model(_net(), act_bits=8), torch.ones(4, 16, dtype=torch.long)),
     TypeError, "calibrate: a calibration batch must be a floating"),
    ("calibrate None", lambda: Q.calibrate(Q.quantize_model(_net(), act_bits=8), None), TypeError, "calibrate: inputs must be"),
    ("calibrate list of str", lambda: Q.calibrate(Q.quantize_model(_net(), act_bits=8), ["a"]), TypeError, "calibrate: batches must be"),
    ("calibrate empty", lambda: Q.calibrate(Q.quantize_model(_net(), act_bits=8), []), ValueError, "calibrate: no data"),
    ("calibrate percentile nan", lambda: Q.calibrate(Q.quantize_model(_net(), act_bits=8), torch.randn(4, 16), "percentile", NAN),
     ValueError, "calibrate: percentile must be finite"),
    ("calibrate percentile 40", lambda: Q.calibrate(Q.quantize_model(_net(), act_bits=8), torch.randn(4, 16), "percentile", 40),
     ValueError, "calibrate: percentile must be in"),
    ("calibrate method", lambda: Q.calibrate(Q.quantize_model(_net(), act_bits=8), torch.randn(4, 16), "mse"),
     ValueError, "calibrate: method must be one of"),
    ("factorize_linear rank 0", lambda: Q.factorize_linear(nn.Linear(4, 4), 0), ValueError, "factorize_linear: rank must be in"),
    ("factorize_linear rank 1.5", lambda: Q.factorize_linear(nn.Linear(4, 4), 1.5), TypeError, "factorize_linear: rank must be an int"),
    ("factorize_conv2d rank 0", lambda: Q.factorize_conv2d(nn.Conv2d(2, 4, 3), 0), ValueError, "factorize_conv2d: rank must be in"),
    ("low_rank rank 0", lambda: Q.low_rank(_net(), {"1": 0}), ValueError, "low_rank: rank must be in"),
    ("low_rank empty", lambda: Q.low_rank(_net(), {}), TypeError, "low_rank: ranks must be"),
    ("low_rank unknown", lambda: Q.low_rank(_net(), {"9": 2}), ValueError, "low_rank: '9' is not a layer"),
    ("export_onnx None input", lambda: Q.export_onnx(_net(), None, "x.onnx"), TypeError, "export_onnx: example_input must be"),
    ("export_onnx nan input", lambda: Q.export_onnx(_net(), _with_nan(torch.randn(2, 16)), "x.onnx"), ValueError,
     "export_onnx: example_input must hold only finite"),
    ("export_onnx wrong shape", lambda: Q.export_onnx(_net(), torch.randn(2, 5), "/nonexistent/x.onnx"), ValueError,
     "export_onnx: the model cannot run"),
    ("export_onnx path None", lambda: Q.export_onnx(_net(), torch.randn(2, 16), None), TypeError, "export_onnx: path must be"),
    ("onnx_tensor_bytes missing", lambda: Q.onnx_tensor_bytes("/nonexistent.onnx"), FileNotFoundError, "onnx_tensor_bytes: no ONNX file"),
    ("OnnxModel missing", lambda: Q.OnnxModel("/nonexistent.onnx"), FileNotFoundError, "OnnxModel: no ONNX file"),
    ("quantize_onnx missing", lambda: Q.quantize_onnx("/nonexistent.onnx", "o.onnx", torch.randn(2, 2)), FileNotFoundError,
     "quantize_onnx: no ONNX file"),
    # --- prune
    ("apply_masks float 0.5", lambda: P.apply_masks(_net(), {"1": torch.full((8, 16), 0.5)}), TypeError,
     "apply_masks: the mask of '1' must be a bool tensor"),
    ("apply_masks_ float 0.5", lambda: P.apply_masks_(_net(), {"1": torch.full((8, 16), 0.5)}), TypeError,
     "apply_masks_: the mask of '1' must be a bool tensor"),
    ("apply_masks int 2", lambda: P.apply_masks(_net(), {"1": torch.full((8, 16), 2)}), TypeError,
     "apply_masks: the mask of '1' must be a bool"),
    ("apply_masks list", lambda: P.apply_masks(_net(), {"1": [[True]]}), TypeError, "apply_masks: the mask of '1' must be a bool"),
    ("apply_masks shape", lambda: P.apply_masks(_net(), {"1": torch.ones(3, 3, dtype=torch.bool)}), ValueError,
     "apply_masks: the mask of '1' must have the weight's shape"),
    ("magnitude_masks nan", lambda: P.magnitude_masks(_net(), NAN), ValueError, "magnitude_masks: sparsity must be finite"),
    ("magnitude_masks 1.0", lambda: P.magnitude_masks(_net(), 1.0), ValueError, "magnitude_masks: sparsity must be in"),
    ("magnitude_masks True", lambda: P.magnitude_masks(_net(), True), TypeError, "magnitude_masks: sparsity must be a real"),
    ("magnitude_masks None model", lambda: P.magnitude_masks(None, 0.5), TypeError, "prunable_layers: model must be"),
    ("geometric_schedule steps 0", lambda: P.geometric_schedule(0.5, 0), ValueError, "geometric_schedule: steps must be >= 1"),
    ("geometric_schedule steps 2.0", lambda: P.geometric_schedule(0.5, 2.0), TypeError, "geometric_schedule: steps must be an int"),
    ("random_reinit seed -1", lambda: P.random_reinit(_net(), {}, -1), ValueError, "random_reinit: seed must be >= 0"),
    ("prune_channels unknown model", lambda: P.prune_channels(models.MessagePassingGNN(8), 0.5), TypeError,
     "prune_channels: the forward order"),
    ("csr_bytes list", lambda: P.csr_bytes([[1.0]]), TypeError, "csr_bytes: expected a tensor"),
    ("csr_bytes value_bits 0", lambda: P.csr_bytes(W, value_bits=0), ValueError, "csr_bytes: value_bits must be >= 1"),
    ("kmeans_1d k 0", lambda: P.kmeans_1d(W, 0), ValueError, "kmeans_1d: k must be >= 1"),
    ("pack_indices None", lambda: P.pack_indices(None, 2), TypeError, "pack_indices: labels must be a torch.Tensor"),
    ("pack_indices float", lambda: P.pack_indices(torch.tensor([0.5]), 2), TypeError, "pack_indices: labels must be an integer"),
    ("pack_indices negative", lambda: P.pack_indices(torch.tensor([-1]), 2), ValueError, "pack_indices: labels must be in"),
    ("unpack_indices int64", lambda: P.unpack_indices(torch.tensor([1]), 2, 1), TypeError, "unpack_indices: packed must be a uint8"),
    ("unpack_indices n -1", lambda: P.unpack_indices(torch.tensor([1], dtype=torch.uint8), 2, -1), ValueError,
     "unpack_indices: n must be >= 0"),
    ("remove_layer not residual", lambda: P.remove_layer(models.residual_mlp(16, 8, 2), "1"), ValueError,
     "remove_layer: '1' is a Linear"),
    ("fine_tune epochs 0", lambda: P.fine_tune(_net(), None, [(torch.randn(2, 16), torch.tensor([0, 1]))], epochs=0),
     ValueError, "fine_tune: epochs must be >= 1"),
    ("fine_tune lr -1", lambda: P.fine_tune(_net(), None, [], epochs=1, lr=-1.0), ValueError, "fine_tune: lr must be in"),
    ("iterative_prune epochs 0", lambda: P.iterative_prune(_net(), [], [0.5], epochs_per_step=0), ValueError,
     "iterative_prune: epochs_per_step must be >= 1"),
    ("iterative_prune str", lambda: P.iterative_prune(_net(), [], "0.5", epochs_per_step=1), TypeError,
     "iterative_prune: sparsities must be"),
    ("sensitivity_scan evaluate None", lambda: P.sensitivity_scan(_net(), None, [0.5]), TypeError,
     "sensitivity_scan: evaluate must be"),
    ("layer_removal_scan evaluate None", lambda: P.layer_removal_scan(models.residual_mlp(16, 8, 2), None), TypeError,
     "layer_removal_scan: evaluate must be"),
    ("kmeans_1d nan", lambda: P.kmeans_1d(torch.tensor([0.0, NAN, 1.0]), 2), ValueError, "kmeans_1d: values must hold only finite"),
    ("encode_shared nan", lambda: P.encode_shared(torch.tensor([0.0, NAN, 1.0]), 2), ValueError, "kmeans_1d: values must"),
    ("magnitude_masks nan weight", lambda: P.magnitude_masks(_nan_net(), 0.5), ValueError,
     "magnitude_masks: the weight of '1' holds NaN"),
    ("prune_channels nan weight", lambda: P.prune_channels(_nan_net(), 0.5), ValueError,
     "prune_channels: the weight of '1' holds NaN"),
    ("prunable_layers int", lambda: P.prunable_layers(_net(), 5), TypeError, "prunable_layers: layers must be a list"),
    # --- measure
    ("count_params str", lambda: measure.count_params("model"), TypeError, "count_params: model must be"),
    ("count_params trainable 'yes'", lambda: measure.count_params(_net(), trainable_only="yes"), TypeError,
     "count_params: trainable_only must be True or False"),
    ("flops list", lambda: measure.flops(_net(), [1.0]), TypeError, "flops: example_input must be"),
    ("latency repeats 1", lambda: measure.latency(_net(), torch.randn(1, 16), repeats=1), ValueError,
     "latency: repeats must be >= 3"),
    ("latency warmup -1", lambda: measure.latency(_net(), torch.randn(1, 16), warmup=-1), ValueError, "latency: warmup must be >= 0"),
    ("latency repeats 3.0", lambda: measure.latency(_net(), torch.randn(1, 16), repeats=3.0), TypeError,
     "latency: repeats must be an int"),
    ("latency None", lambda: measure.latency(None, torch.randn(1, 16)), TypeError, "latency: fn_or_model must be"),
    ("latency_ratio rounds 0", lambda: measure.latency_ratio(_net(), _net(), torch.randn(1, 16), rounds=0), ValueError,
     "latency_ratio: rounds must be >= 1"),
    ("sparsity empty", lambda: measure.sparsity(torch.ones(0)), ValueError, "sparsity: obj must not be empty"),
    ("sparsity str", lambda: measure.sparsity("x"), TypeError, "sparsity: obj must be"),
    # --- models
    ("DigitsCNN n_classes 0", lambda: models.DigitsCNN(n_classes=0), ValueError, "DigitsCNN: n_classes must be"),
    ("DigitsCNN channels str", lambda: models.DigitsCNN("abc"), ValueError, "DigitsCNN: channels must be"),
    ("mlp hidden int", lambda: models.mlp(64, 5), TypeError, "mlp: hidden must be"),
    ("mlp dropout nan", lambda: models.mlp(64, (3,), dropout=NAN), ValueError, "mlp: dropout must be"),
    ("mlp n_classes 0", lambda: models.mlp(64, (3,), 0), ValueError, "mlp: sizes must be positive"),
    ("residual_mlp width 0", lambda: models.residual_mlp(64, 0), ValueError, "residual_mlp: width must be"),
    ("residual_mlp blocks -1", lambda: models.residual_mlp(blocks=-1), ValueError, "residual_mlp: blocks must be"),
    ("Residual body None", lambda: models.Residual(None), TypeError, "Residual: body must be"),
]


@pytest.mark.parametrize("label,call,exc,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(label, call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert str(info.value).startswith(message), str(info.value)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


def _same(model, snapshot):
    state, modes = snapshot
    now = model.state_dict()
    same = lambda a, b: a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all()) \
        if a.is_floating_point() else torch.equal(a, b)
    return (now.keys() == state.keys() and all(same(now[k], state[k]) for k in state)
            and [m.training for m in model.modules()] == modes)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_failed_measure_calls_leave_the_model_as_it_was(mode):
    model = _net().train(mode == "train")
    model[3].train(mode != "train")     # a mixed state must come back exactly too
    snap = _state(model)
    bad = torch.randn(2, 5)             # the forward pass raises inside
    for call in (lambda: measure.flops(model, bad), lambda: measure.latency(model, bad, repeats=3),
                 lambda: measure.latency_ratio(model, model, bad, rounds=1, repeats=3)):
        with pytest.raises(RuntimeError):
            call()
        assert _same(model, snap)
    measure.flops(model, torch.randn(1, 16))                       # and a successful call too
    measure.latency(model, torch.randn(1, 16), warmup=0, repeats=3)
    assert _same(model, snap)


def test_failed_technique_calls_leave_the_model_unchanged():
    model = _net().train()
    snap = _state(model)
    for call in (lambda: Q.quantize_model(model, symmetric="no"), lambda: Q.low_rank(model, {"1": 99}),
                 lambda: P.apply_masks(model, {"1": torch.full((8, 16), 0.5)}),
                 lambda: P.apply_masks_(model, {"1": torch.full((8, 16), 0.5)}),
                 lambda: P.prune_channels(model, {"3": 0.5}), lambda: P.magnitude_prune(model, NAN)):
        with pytest.raises((TypeError, ValueError)):
            call()
        assert _same(model, snap)
    q = Q.quantize_model(model, act_bits=8)
    qsnap = _state(q)
    with pytest.raises(ValueError):
        Q.calibrate(q, torch.randn(4, 5))
    assert _same(q, qsnap) and all(m.act_bits == 8 for m in q.modules() if isinstance(m, Q.QuantLayer))


def test_nan_never_becomes_a_confident_number():
    # before issue 16, a NaN scale gave codes of -2147483648 and a NaN weight silently used scale 1
    assert not hasattr(Q, "_never")
    x = torch.tensor([0.1, 0.2, 0.3])
    assert torch.equal(Q.quantize(x, 0.1, 0), torch.tensor([1, 2, 3], dtype=torch.int32))
    layer = Q.QuantLayer(nn.Linear(3, 2))
    with torch.no_grad():
        layer.layer.weight[0, 0] = NAN
    with pytest.raises(ValueError, match="fake_quantize: x must hold only finite"):
        layer(torch.randn(1, 3))
    assert math.isnan(float(measure.sparsity(torch.tensor([NAN, 0.0]))) * 0) is False   # NaN is simply "not zero"
