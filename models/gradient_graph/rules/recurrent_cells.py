"""One time step of LSTM, GRU and RNN, forward and backward, as ONNX nodes of a ``Scan`` body.

Equations and gate orders are the ONNX operator definitions (LSTM gates ``i o f c``, GRU gates
``z r h``), with onnxruntime's reading of the optional parts: ``clip`` bounds every gate's
activation input (not the cell state fed to ``h``), ``input_forget`` makes the forget gate
``1 - i`` (no forget peephole then), and activations take ``activation_alpha`` /
``activation_beta`` in order, only those that have the parameter, with onnxruntime's defaults
(LeakyRelu 0.01, HardSigmoid 0.2 / 0.5, Elu 1.0, others 0).

A step with a ``sequence_lens`` mask ``m`` (1 inside the sequence, 0 past its end, shape
``(batch, 1)``) keeps the state where ``m = 0``: ``state = old + m (new - old)``; its output
``Y_t = m H_new``. The forward step returns the new states and the tensors the backward step
needs (the gates' pre-activations, after peepholes and before clipping, and the previous cell or
hidden state); the backward step maps the carried state gradients and ``dY_t`` to the previous
states' gradients and the gradient of the input projection ``X_t W^T + b`` (``(batch, gates*hidden)``).
Imports onnx and numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.gradient_graph.rules.body import BodyEmitter

__all__ = ["ACTIVATION_PARAMETERS", "Activation", "CellSpec", "CellWeights", "backward_step", "forward_step"]

#: Lower-case activation name -> (takes alpha, takes beta, default alpha, default beta).
ACTIVATION_PARAMETERS: dict[str, tuple[bool, bool, float, float]] = {
    "affine": (True, True, 0.0, 0.0),
    "relu": (False, False, 0.0, 0.0),
    "leakyrelu": (True, False, 0.01, 0.0),
    "thresholdedrelu": (True, False, 0.0, 0.0),
    "tanh": (False, False, 0.0, 0.0),
    "scaledtanh": (True, True, 0.0, 0.0),
    "sigmoid": (False, False, 0.0, 0.0),
    "hardsigmoid": (True, True, 0.2, 0.5),
    "elu": (True, False, 1.0, 0.0),
    "softsign": (False, False, 0.0, 0.0),
    "softplus": (False, False, 0.0, 0.0),
}


@dataclass(frozen=True)
class Activation:
    """A recurrent activation function: ``name`` (lower case) with its ``alpha`` and ``beta``."""

    name: str
    alpha: float = 0.0
    beta: float = 0.0

    def value(self, b: BodyEmitter, a: str) -> str:
        """``act(a)``."""
        n, alpha, beta = self.name, self.alpha, self.beta
        simple = {
            "sigmoid": "Sigmoid",
            "tanh": "Tanh",
            "relu": "Relu",
            "softsign": "Softsign",
            "softplus": "Softplus",
        }
        if n in simple:
            return b.op(simple[n], [a])
        if n == "affine":
            return b.add(b.mul(a, b.scalar(alpha)), b.scalar(beta))
        if n == "leakyrelu":
            return b.op("LeakyRelu", [a], alpha=alpha)
        if n == "thresholdedrelu":
            return b.op("ThresholdedRelu", [a], alpha=alpha)
        if n == "scaledtanh":
            return b.mul(b.op("Tanh", [b.mul(a, b.scalar(beta))]), b.scalar(alpha))
        if n == "hardsigmoid":
            return b.op("HardSigmoid", [a], alpha=alpha, beta=beta)
        if n == "elu":
            return b.op("Elu", [a], alpha=alpha)
        raise ValueError(f"unknown recurrent activation {self.name!r}")  # parse_activations guards this

    def value_and_slope(self, b: BodyEmitter, a: str) -> tuple[str, str]:
        """``(act(a), act'(a))``, elementwise."""
        n, alpha, beta = self.name, self.alpha, self.beta
        if n == "scaledtanh":
            t = b.op("Tanh", [b.mul(a, b.scalar(beta))])
            return b.mul(t, b.scalar(alpha)), b.mul(b.one_minus(b.mul(t, t)), b.scalar(alpha * beta))
        y = self.value(b, a)
        if n == "sigmoid":
            return y, b.mul(y, b.one_minus(y))
        if n == "tanh":
            return y, b.one_minus(b.mul(y, y))
        if n == "relu":
            return y, _above(b, a, 0.0)
        if n == "affine":
            return y, b.scalar(alpha)
        if n == "leakyrelu":
            return y, b.add(b.mul(_above(b, a, 0.0), b.scalar(1.0 - alpha)), b.scalar(alpha))
        if n == "thresholdedrelu":
            return y, _above(b, a, alpha)
        if n == "hardsigmoid":
            z = b.add(b.mul(a, b.scalar(alpha)), b.scalar(beta))
            inside = b.op("And", [b.op("Greater", [z, b.scalar(0.0)]), b.op("Less", [z, b.scalar(1.0)])])
            return y, b.mul(b.op("Cast", [inside], to=b.elem_type), b.scalar(alpha))
        if n == "elu":
            return y, b.op(
                "Where", [b.op("Greater", [a, b.scalar(0.0)]), b.scalar(1.0), b.add(y, b.scalar(alpha))]
            )
        if n == "softsign":
            d = b.add(b.op("Abs", [a]), b.scalar(1.0))
            return y, b.op("Reciprocal", [b.mul(d, d)])
        if n == "softplus":
            return y, b.op("Sigmoid", [a])
        raise ValueError(f"unknown recurrent activation {self.name!r}")


def _above(b: BodyEmitter, a: str, threshold: float) -> str:
    return b.op("Cast", [b.op("Greater", [a, b.scalar(threshold)])], to=b.elem_type)


@dataclass(frozen=True)
class CellSpec:
    """The attributes of one direction of a recurrent node.

    Attributes:
        kind: ``"LSTM"``, ``"GRU"`` or ``"RNN"``.
        hidden: the hidden size.
        activations: ``f, g, h`` (LSTM), ``f, g`` (GRU) or ``f`` (RNN) of this direction.
        clip: the cell clip threshold, or ``None``.
        input_forget: LSTM's coupled input and forget gates.
        linear_before_reset: GRU's ``linear_before_reset``.
    """

    kind: str
    hidden: int
    activations: tuple[Activation, ...]
    clip: float | None = None
    input_forget: bool = False
    linear_before_reset: bool = False


@dataclass(frozen=True)
class CellWeights:
    """Outer-scope tensors of one direction (``G`` gates, hidden size ``H``).

    Attributes:
        r: ``R`` of the direction, ``(G*H, H)``.
        rt: its transpose ``(H, G*H)``; for GRU only the ``z, r`` rows, ``(H, 2H)``.
        peepholes: LSTM's ``P_i, P_o, P_f`` (each ``(H,)``), or ``None``.
        r_h, rt_h: GRU's ``R_h`` ``(H, H)`` and its transpose.
        r_zr: GRU's ``R_z, R_r`` rows ``(2H, H)``.
        rb_h: GRU's ``Rb_h`` ``(H,)`` when ``linear_before_reset`` (it is applied inside the reset).
    """

    r: str
    rt: str
    peepholes: tuple[str, str, str] | None = None
    r_h: str = ""
    rt_h: str = ""
    r_zr: str = ""
    rb_h: str = ""


def _keep(b: BodyEmitter, new: str, old: str, mask: str | None) -> str:
    return new if mask is None else b.add(old, b.mul(mask, b.sub(new, old)))


def _clipped(b: BodyEmitter, spec: CellSpec, a: str) -> tuple[str, str | None]:
    """The activation input ``clip(a)`` and ``[|a| < clip]``, the factor of its slope."""
    if spec.clip is None:
        return a, None
    bound = spec.clip
    clipped = b.op("Clip", [a, b.scalar(-bound), b.scalar(bound)])
    inside = b.op("Less", [b.op("Abs", [a]), b.scalar(bound)])
    return clipped, b.op("Cast", [inside], to=b.elem_type)


def _gate(b: BodyEmitter, spec: CellSpec, act: Activation, a: str) -> str:
    return act.value(b, _clipped(b, spec, a)[0])


def _gate_and_slope(b: BodyEmitter, spec: CellSpec, act: Activation, a: str) -> tuple[str, str]:
    clipped, inside = _clipped(b, spec, a)
    y, slope = act.value_and_slope(b, clipped)
    return y, slope if inside is None else b.mul(slope, inside)


def _split(b: BodyEmitter, x: str, hidden: int, parts: int) -> list[str]:
    return [b.columns(x, k * hidden, (k + 1) * hidden) for k in range(parts)]


# --------------------------------------------------------------------------- forward


def forward_step(
    b: BodyEmitter, spec: CellSpec, w: CellWeights, states: Sequence[str], xw: str, mask: str | None
) -> tuple[list[str], list[str]]:
    """One forward step: ``(new states, saved tensors)``; ``xw`` is ``X_t W^T + b``, ``(batch, G*H)``."""
    if spec.kind == "LSTM":
        return _lstm_forward(b, spec, w, states, xw, mask)
    if spec.kind == "GRU":
        return _gru_forward(b, spec, w, states, xw, mask)
    (h,) = states
    a = b.add(xw, b.matmul(h, w.rt))
    return [_keep(b, _gate(b, spec, spec.activations[0], a), h, mask)], [a]


def _lstm_forward(
    b: BodyEmitter, spec: CellSpec, w: CellWeights, states: Sequence[str], xw: str, mask: str | None
) -> tuple[list[str], list[str]]:
    h, c = states
    f_act, g_act, h_act = spec.activations
    pre = b.add(xw, b.matmul(h, w.rt))
    a_i, a_o, a_f, a_c = _split(b, pre, spec.hidden, 4)
    if w.peepholes is not None:
        p_i, p_o, p_f = w.peepholes
        a_i = b.add(a_i, b.mul(p_i, c))
        if not spec.input_forget:
            a_f = b.add(a_f, b.mul(p_f, c))
    i = _gate(b, spec, f_act, a_i)
    f = b.one_minus(i) if spec.input_forget else _gate(b, spec, f_act, a_f)
    c_new = b.add(b.mul(f, c), b.mul(i, _gate(b, spec, g_act, a_c)))
    if w.peepholes is not None:
        a_o = b.add(a_o, b.mul(w.peepholes[1], c_new))
        pre = b.op("Concat", [a_i, a_o, a_f, a_c], axis=1)
    h_new = b.mul(_gate(b, spec, f_act, a_o), h_act.value(b, c_new))
    return [_keep(b, h_new, h, mask), _keep(b, c_new, c, mask)], [pre, c]


def _gru_forward(
    b: BodyEmitter, spec: CellSpec, w: CellWeights, states: Sequence[str], xw: str, mask: str | None
) -> tuple[list[str], list[str]]:
    (h,) = states
    f_act, g_act = spec.activations
    hidden = spec.hidden
    x_z, x_r, x_h = _split(b, xw, hidden, 3)
    hr = b.matmul(h, w.rt)
    a_z = b.add(x_z, b.columns(hr, 0, hidden))
    a_r = b.add(x_r, b.columns(hr, hidden, 2 * hidden))
    z = _gate(b, spec, f_act, a_z)
    r = _gate(b, spec, f_act, a_r)
    saved_extra: list[str] = []
    if spec.linear_before_reset:
        hh = b.matmul(h, w.rt_h)
        if w.rb_h:
            hh = b.add(hh, w.rb_h)
        a_h = b.add(x_h, b.mul(r, hh))
        saved_extra.append(hh)
    else:
        a_h = b.add(x_h, b.matmul(b.mul(r, h), w.rt_h))
    ht = _gate(b, spec, g_act, a_h)
    h_new = b.add(ht, b.mul(z, b.sub(h, ht)))
    pre = b.op("Concat", [a_z, a_r, a_h], axis=1)
    return [_keep(b, h_new, h, mask)], [pre, h, *saved_extra]


# --------------------------------------------------------------------------- backward


def backward_step(
    b: BodyEmitter,
    spec: CellSpec,
    w: CellWeights,
    carried: Sequence[str],
    saved: Sequence[str],
    gy: str | None,
    mask: str | None,
) -> tuple[list[str], str]:
    """One backward step: ``(gradients of the previous states, gradient of X_t W^T + b)``.

    ``carried`` are the gradients of the states this step produced, ``gy`` the gradient of its
    output ``Y_t`` (``None`` when ``Y`` has none), ``saved`` what :func:`forward_step` saved.
    """
    gh = carried[0]
    gh_in = gh if gy is None else b.add(gh, gy)
    if mask is not None:
        gh_in = b.mul(mask, gh_in)
    if spec.kind == "LSTM":
        gc = carried[1]
        gc_in = gc if mask is None else b.mul(mask, gc)
        gh_prev, gc_prev, gpre = _lstm_backward(b, spec, w, gh_in, gc_in, saved)
        previous = [gh_prev, gc_prev]
    elif spec.kind == "GRU":
        gh_prev, gpre = _gru_backward(b, spec, w, gh_in, saved)
        previous = [gh_prev]
    else:
        _, slope = _gate_and_slope(b, spec, spec.activations[0], saved[0])
        gpre = b.mul(gh_in, slope)
        previous = [b.matmul(gpre, w.r)]
    if mask is not None:
        outside = b.one_minus(mask)
        previous = [b.add(prev, b.mul(outside, g)) for prev, g in zip(previous, carried, strict=True)]
    return previous, gpre


def _lstm_backward(
    b: BodyEmitter, spec: CellSpec, w: CellWeights, gh: str, gc: str, saved: Sequence[str]
) -> tuple[str, str, str]:
    pre, c = saved
    f_act, g_act, h_act = spec.activations
    a_i, a_o, a_f, a_c = _split(b, pre, spec.hidden, 4)
    i, di = _gate_and_slope(b, spec, f_act, a_i)
    if spec.input_forget:
        f, df = b.one_minus(i), None
    else:
        f, df = _gate_and_slope(b, spec, f_act, a_f)
    cc, dcc = _gate_and_slope(b, spec, g_act, a_c)
    c_new = b.add(b.mul(f, c), b.mul(i, cc))
    o, do = _gate_and_slope(b, spec, f_act, a_o)
    hc, dhc = h_act.value_and_slope(b, c_new)
    g_ao = b.mul(b.mul(gh, hc), do)
    gc_total = b.add(gc, b.mul(b.mul(gh, o), dhc))
    if w.peepholes is not None:
        gc_total = b.add(gc_total, b.mul(g_ao, w.peepholes[1]))
    g_f = b.mul(gc_total, c)
    g_i = b.mul(gc_total, cc)
    if spec.input_forget:
        g_i = b.sub(g_i, g_f)
    g_ai = b.mul(g_i, di)
    g_af = b.mul(g_f, df) if df is not None else b.mul(g_f, b.scalar(0.0))
    g_ac = b.mul(b.mul(gc_total, i), dcc)
    gc_prev = b.mul(gc_total, f)
    if w.peepholes is not None:
        gc_prev = b.add(gc_prev, b.mul(g_ai, w.peepholes[0]))
        if not spec.input_forget:
            gc_prev = b.add(gc_prev, b.mul(g_af, w.peepholes[2]))
    gpre = b.op("Concat", [g_ai, g_ao, g_af, g_ac], axis=1)
    return b.matmul(gpre, w.r), gc_prev, gpre


def _gru_backward(
    b: BodyEmitter, spec: CellSpec, w: CellWeights, gh: str, saved: Sequence[str]
) -> tuple[str, str]:
    pre, h = saved[0], saved[1]
    f_act, g_act = spec.activations
    a_z, a_r, a_h = _split(b, pre, spec.hidden, 3)
    z, dz = _gate_and_slope(b, spec, f_act, a_z)
    r, dr = _gate_and_slope(b, spec, f_act, a_r)
    ht, dht = _gate_and_slope(b, spec, g_act, a_h)
    g_ah = b.mul(b.mul(gh, b.one_minus(z)), dht)
    g_az = b.mul(b.mul(gh, b.sub(h, ht)), dz)
    gh_prev = b.mul(gh, z)
    if spec.linear_before_reset:
        g_r = b.mul(g_ah, saved[2])
        gh_prev = b.add(gh_prev, b.matmul(b.mul(g_ah, r), w.r_h))
    else:
        g_rh = b.matmul(g_ah, w.r_h)
        g_r = b.mul(g_rh, h)
        gh_prev = b.add(gh_prev, b.mul(g_rh, r))
    g_ar = b.mul(g_r, dr)
    gh_prev = b.add(gh_prev, b.matmul(b.op("Concat", [g_az, g_ar], axis=1), w.r_zr))
    return gh_prev, b.op("Concat", [g_az, g_ar, g_ah], axis=1)
