"""VJP rules of LSTM, GRU and RNN: backpropagation through time with two ``Scan`` loops per direction.

The forward node keeps only the last states, so per direction the rule emits

1. a forward ``Scan`` that recomputes the recurrence from ``X``, the weights and the initial
   states and stacks, per time step, what the backward step needs (the gates' pre-activations
   and the previous cell or hidden state: :mod:`.recurrent_cells`);
2. a backward ``Scan`` in the opposite time order that carries the gradients of the hidden (and
   cell) state, adds ``dY_t``, and stacks the gradients of the input projection ``X_t W^T + b``.

The input projection and its gradient ``dX = dGates · W`` are one MatMul over the whole sequence
outside the loops, so a loop step holds only the recurrent products with ``R`` and elementwise
work. The sequence length may be dynamic. All directions (forward, reverse, bidirectional),
``layout`` 0 and 1, ``sequence_lens`` (steps past a sequence's end keep the state and output
zeros, as onnxruntime computes them), initial states, LSTM peepholes and ``input_forget``,
GRU's ``linear_before_reset``, ``clip`` and every activation of the operator definitions are
supported; exporters emit one node per layer and direction pair, and stacked layers chain
through ``Y``. Gradients flow to ``X``, ``initial_h`` and ``initial_c``; the weights ``W``,
``R``, ``B`` and ``P`` are never differentiated (a weight computed from the differentiated
inputs is refused). Imports onnx and numpy only.
"""

from __future__ import annotations

import numpy as np
import onnx

from models.gradient_graph.context import VjpContext, get_attr
from models.gradient_graph.rules.body import BodyEmitter
from models.gradient_graph.rules.common import Grads, Wrt
from models.gradient_graph.rules.recurrent_cells import (
    ACTIVATION_PARAMETERS,
    Activation,
    CellSpec,
    CellWeights,
    backward_step,
    forward_step,
)
from models.gradient_graph.rules.registry import register

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
# Input slots: X, W, R, B, sequence_lens, initial_h, then LSTM's initial_c and P.
_X, _W, _R, _B, _LENS, _H0, _C0, _P = range(8)
_WEIGHT_SLOTS = {_W: "W", _R: "R", _B: "B", _P: "P"}


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _activations(
    ctx: VjpContext, node: onnx.NodeProto, kind: str, directions: int
) -> list[tuple[Activation, ...]]:
    """The activations of each direction, with alpha and beta consumed in order as onnxruntime does."""
    per_direction = len(_DEFAULT_ACTIVATIONS[kind])
    raw = get_attr(node, "activations")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw] if raw else []
    if not names:
        names = list(_DEFAULT_ACTIVATIONS[kind]) * directions
    elif kind == "RNN" and directions == 1 and len(names) == 2:
        names = names[:1]  # the RNN operator's default used to list Tanh twice
    if len(names) != per_direction * directions:
        raise ctx.unsupported(
            node,
            f"activations={names} lists {len(names)} functions; a {kind} with {directions} direction(s) "
            f"takes {per_direction * directions}",
            "Fix the activations attribute (onnxruntime refuses this node too)",
        )
    alphas = [float(v) for v in get_attr(node, "activation_alpha", []) or []]
    betas = [float(v) for v in get_attr(node, "activation_beta", []) or []]
    parsed: list[Activation] = []
    for name in names:
        key = name.lower()
        if key not in ACTIVATION_PARAMETERS:
            raise ctx.unsupported(
                node,
                f"unknown activation {name!r} (the operator allows {', '.join(sorted(ACTIVATION_PARAMETERS))})",
                "Fix the activations attribute (onnxruntime refuses this node too)",
            )
        takes_alpha, takes_beta, alpha, beta = ACTIVATION_PARAMETERS[key]
        if takes_alpha and alphas:
            alpha = alphas.pop(0)
        if takes_beta and betas:
            beta = betas.pop(0)
        parsed.append(Activation(key, alpha, beta))
    return [tuple(parsed[d * per_direction : (d + 1) * per_direction]) for d in range(directions)]


def _specs(ctx: VjpContext, node: onnx.NodeProto, kind: str) -> tuple[list[bool], int, list[CellSpec]]:
    """``(reverse flag per direction, layout, cell spec per direction)`` of a recurrent node."""
    hidden = get_attr(node, "hidden_size")
    if hidden is None:
        r_shape = ctx.shape(node.input[_R])
        if r_shape is None or len(r_shape) != 3 or not isinstance(r_shape[2], int):
            raise ctx.unsupported(
                node, "hidden_size is not set and R's shape is unknown", "Set hidden_size on the node"
            )
        hidden = r_shape[2]
    direction = get_attr(node, "direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ctx.unsupported(
            node,
            f"direction={direction!r} (expected forward, reverse or bidirectional)",
            "Fix the direction attribute",
        )
    reverse = [False, True] if direction == "bidirectional" else [direction == "reverse"]
    layout = int(get_attr(node, "layout", 0))
    if layout not in (0, 1):
        raise ctx.unsupported(node, f"layout={layout} (expected 0 or 1)", "Fix the layout attribute")
    clip = get_attr(node, "clip")
    if clip is not None and not float(clip) > 0:
        raise ctx.unsupported(
            node, f"clip={clip} (the threshold must be positive)", "Remove clip or make it positive"
        )
    activations = _activations(ctx, node, kind, len(reverse))
    specs = [
        CellSpec(
            kind=kind,
            hidden=int(hidden),
            activations=acts,
            clip=None if clip is None else float(clip),
            input_forget=kind == "LSTM" and bool(get_attr(node, "input_forget", 0)),
            linear_before_reset=kind == "GRU" and bool(get_attr(node, "linear_before_reset", 0)),
        )
        for acts in activations
    ]
    return reverse, layout, specs


class _Direction:
    """Main-graph tensors of one direction ``d``: weights, bias-added input projection, initial states."""

    def __init__(
        self,
        ctx: VjpContext,
        node: onnx.NodeProto,
        spec: CellSpec,
        d: int,
        x_tm: str,
        zeros: str,
        layout: int,
    ) -> None:
        hidden = spec.hidden
        gates = _GATES[spec.kind]
        index = ctx.const(np.asarray(d, dtype=np.int64))
        self.w = ctx.op("Gather", [node.input[_W], index], axis=0)  # (G*H, I)
        r = ctx.op("Gather", [node.input[_R], index], axis=0)  # (G*H, H)
        xw = ctx.op("MatMul", [x_tm, ctx.op("Transpose", [self.w], perm=[1, 0])])
        bias = _input(node, _B)
        rb_h = ""
        if bias:
            both = ctx.op("Gather", [bias, index], axis=0)  # (2*G*H,): Wb then Rb
            wb = _rows(ctx, both, 0, gates * hidden)
            rb = _rows(ctx, both, gates * hidden, 2 * gates * hidden)
            if spec.linear_before_reset:
                # Rb_h is added inside the reset gate's product, not to the input projection.
                rb_h = _rows(ctx, rb, 2 * hidden, 3 * hidden)
                keep = np.concatenate([np.ones(2 * hidden), np.zeros(hidden)])
                rb = ctx.op("Mul", [rb, ctx.full_const(keep, x_tm)])
            xw = ctx.op("Add", [xw, ctx.op("Add", [wb, rb])])
        self.xw = xw  # (T, B, G*H)
        if spec.kind == "GRU":
            r_zr = _rows(ctx, r, 0, 2 * hidden)
            r_h = _rows(ctx, r, 2 * hidden, 3 * hidden)
            self.weights = CellWeights(
                r=r, rt=_t(ctx, r_zr), r_h=r_h, rt_h=_t(ctx, r_h), r_zr=r_zr, rb_h=rb_h
            )
        else:
            peepholes = None
            if spec.kind == "LSTM" and _input(node, _P):
                p = ctx.op("Gather", [node.input[_P], index], axis=0)  # (3H,): P_i, P_o, P_f
                peepholes = (
                    _rows(ctx, p, 0, hidden),
                    _rows(ctx, p, hidden, 2 * hidden),
                    _rows(ctx, p, 2 * hidden, 3 * hidden),
                )
            self.weights = CellWeights(r=r, rt=_t(ctx, r), peepholes=peepholes)
        state_axis = 1 if layout else 0
        self.h0 = ctx.op("Gather", [node.input[_H0], index], axis=state_axis) if _input(node, _H0) else zeros
        self.c0 = zeros
        if spec.kind == "LSTM" and _input(node, _C0):
            self.c0 = ctx.op("Gather", [node.input[_C0], index], axis=state_axis)


def _rows(ctx: VjpContext, x: str, start: int, stop: int) -> str:
    return ctx.op("Slice", [x, ctx.ints([start]), ctx.ints([stop]), ctx.ints([0])])


def _t(ctx: VjpContext, x: str) -> str:
    return ctx.op("Transpose", [x], perm=[1, 0])


def _sequence_mask(ctx: VjpContext, lens: str, shape_x: str, time_axis: int, like: str) -> str:
    """``[t < sequence_lens[b]]`` as a ``(T, B, 1)`` tensor of ``like``'s type."""
    steps = ctx.squeeze(ctx.op("Slice", [shape_x, ctx.ints([time_axis]), ctx.ints([time_axis + 1])]), [0])
    time = ctx.op("Range", [ctx.const(np.asarray(0, np.int64)), steps, ctx.const(np.asarray(1, np.int64))])
    lens64 = ctx.op("Cast", [lens], to=onnx.TensorProto.INT64)
    inside = ctx.op("Less", [ctx.unsqueeze(time, [1]), ctx.unsqueeze(lens64, [0])])
    return ctx.unsqueeze(ctx.mask(inside, like), [2])


def _direction_vjp(
    ctx: VjpContext,
    spec: CellSpec,
    tensors: _Direction,
    reverse: bool,
    mask: str | None,
    seeds: list[str],
    gy: str | None,
    elem_type: int,
) -> tuple[str, list[str]]:
    """``(gradient of the input projection (T, B, G*H), gradients of the initial states)`` of one direction.

    Both loops run their scan axis forwards (``Scan``'s reverse directions are not implemented by
    every runtime, onnx's reference evaluator included): sequences are reversed along time
    around them instead.
    """
    lstm = spec.kind == "LSTM"

    def flip(x: str) -> str:
        return ctx.op("Slice", [x, ctx.ints([-1]), ctx.ints([-(2**63)]), ctx.ints([0]), ctx.ints([-1])])

    # Forward recomputation, in the order the direction processes time.
    def in_order(x: str) -> str:
        return flip(x) if reverse else x

    fwd = BodyEmitter(ctx, elem_type)
    states = [fwd.input("h"), *([fwd.input("c")] if lstm else [])]
    xw_t = fwd.input("xw")
    mask_t = fwd.input("mask") if mask else None
    new_states, saved = forward_step(fwd, spec, tensors.weights, states, xw_t, mask_t)
    body = fwd.graph([*new_states, *saved], "recurrent_forward")
    initial = [tensors.h0, *([tensors.c0] if lstm else [])]
    scans = [in_order(tensors.xw), *([in_order(mask)] if mask else [])]
    stacked = _scan(ctx, body, initial, scans, len(saved))[len(initial) :]

    # Backpropagation through time: the opposite order.
    def against_order(x: str) -> str:
        return x if reverse else flip(x)

    bwd = BodyEmitter(ctx, elem_type)
    carried = [bwd.input("gh"), *([bwd.input("gc")] if lstm else [])]
    saved_t = [bwd.input("saved") for _ in stacked]
    gy_t = bwd.input("gy") if gy else None
    mask_b = bwd.input("mask") if mask else None
    previous, gpre = backward_step(bwd, spec, tensors.weights, carried, saved_t, gy_t, mask_b)
    body = bwd.graph([*previous, gpre], "recurrent_backward")
    scans = [
        *(flip(x) for x in stacked),
        *([against_order(gy)] if gy else []),
        *([against_order(mask)] if mask else []),
    ]
    outputs = _scan(ctx, body, seeds, scans, 1)
    return against_order(outputs[-1]), outputs[: len(seeds)]


def _scan(
    ctx: VjpContext, body: onnx.GraphProto, states: list[str], scans: list[str], n_out: int
) -> list[str]:
    return ctx.op_multi("Scan", [*states, *scans], len(states) + n_out, body=body, num_scan_inputs=len(scans))


def _recurrent_vjp(
    ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt, kind: str
) -> list[str | None]:
    for slot, role in _WEIGHT_SLOTS.items():
        if slot < len(wrt) and wrt[slot]:
            raise ctx.unsupported(
                node,
                f"its {role} input {node.input[slot]!r} is computed from the differentiated inputs; recurrent "
                "weights are not differentiated",
                "Explain with respect to the sequence input, or export the weights as initializers",
            )
    reverse, layout, specs = _specs(ctx, node, kind)
    x = node.input[_X]
    elem_type = ctx.dtype(x)
    hidden = specs[0].hidden
    x_tm = ctx.op("Transpose", [x], perm=[1, 0, 2]) if layout else x
    shape_x = ctx.shape_of(x)
    batch_axis, time_axis = (0, 1) if layout else (1, 0)
    batch = ctx.op("Slice", [shape_x, ctx.ints([batch_axis]), ctx.ints([batch_axis + 1])])
    zeros = ctx.zeros(ctx.op("Concat", [batch, ctx.ints([hidden])], axis=0), x)
    lens = _input(node, _LENS)
    mask = _sequence_mask(ctx, lens, shape_x, time_axis, x) if lens else None

    g_y = grads[0] if grads else None
    g_yh = grads[1] if len(grads) > 1 else None
    g_yc = grads[2] if kind == "LSTM" and len(grads) > 2 else None
    if g_y is not None and layout:
        g_y = ctx.op("Transpose", [g_y], perm=[1, 2, 0, 3])  # (B, T, D, H) -> (T, D, B, H)
    state_axis = 1 if layout else 0

    g_xw: list[tuple[str, str]] = []
    g_h0: list[str] = []
    g_c0: list[str] = []
    for d, (spec, rev) in enumerate(zip(specs, reverse, strict=True)):
        index = ctx.const(np.asarray(d, dtype=np.int64))
        tensors = _Direction(ctx, node, spec, d, x_tm, zeros, layout)
        gy = ctx.op("Gather", [g_y, index], axis=1) if g_y is not None else None
        seeds = [ctx.op("Gather", [g_yh, index], axis=state_axis) if g_yh is not None else zeros]
        if kind == "LSTM":
            seeds.append(ctx.op("Gather", [g_yc, index], axis=state_axis) if g_yc is not None else zeros)
        g_pre, initial = _direction_vjp(ctx, spec, tensors, rev, mask, seeds, gy, elem_type)
        g_xw.append((g_pre, tensors.w))
        g_h0.append(initial[0])
        if kind == "LSTM":
            g_c0.append(initial[1])

    results: list[str | None] = [None] * len(node.input)
    if wrt[_X]:
        parts = [ctx.op("MatMul", [g_pre, w]) for g_pre, w in g_xw]
        g_x = parts[0] if len(parts) == 1 else ctx.op("Add", parts)
        results[_X] = ctx.op("Transpose", [g_x], perm=[1, 0, 2]) if layout else g_x
    for slot, per_direction in ((_H0, g_h0), (_C0, g_c0)):
        if slot < len(wrt) and wrt[slot] and per_direction:
            stacked = [ctx.unsqueeze(g, [state_axis]) for g in per_direction]
            results[slot] = stacked[0] if len(stacked) == 1 else ctx.op("Concat", stacked, axis=state_axis)
    return results


@register("LSTM")
def lstm(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return _recurrent_vjp(ctx, node, grads, wrt, "LSTM")


@register("GRU")
def gru(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return _recurrent_vjp(ctx, node, grads, wrt, "GRU")


@register("RNN")
def rnn(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return _recurrent_vjp(ctx, node, grads, wrt, "RNN")
