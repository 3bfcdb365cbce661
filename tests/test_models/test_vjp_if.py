"""The If rule against float64 finite differences, constant conditions folded, refusals inside branches.

The gradient graph takes the branch the forward took: one model, inputs that take each branch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.test_models import vjp_harness as h

D = TensorProto.DOUBLE
RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 3))
V = RNG.normal(size=(4, 3))


def branch(name: str, nodes: Sequence[onnx.NodeProto], outputs: Sequence[str]) -> onnx.GraphProto:
    return helper.make_graph(
        list(nodes), name, [], [helper.make_tensor_value_info(o, D, None) for o in outputs]
    )


def model(
    nodes: Sequence[onnx.NodeProto],
    *,
    out: str = "out",
    extra_inits: dict[str, np.ndarray] | None = None,
    extra_inputs: Sequence[onnx.ValueInfoProto] = (),
) -> onnx.ModelProto:
    """``x (N, 4)`` float64, ``positive = sum(x) > 0``, the given nodes, explained output ``out``."""
    inits = {"zero": np.array(0.0), "W": W, "V": V, **(extra_inits or {})}
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("Greater", ["total", "zero"], ["positive"]),
            *nodes,
        ],
        "if_model",
        [helper.make_tensor_value_info("x", D, ["N", 4]), *extra_inputs],
        [helper.make_tensor_value_info(out, D, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    result = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result.ir_version = 10
    return result


POSITIVE = np.abs(h.randn(3, 4, seed=2)) + 0.1
NEGATIVE = -POSITIVE
SIGNS = pytest.mark.parametrize("x", [POSITIVE, NEGATIVE], ids=["then", "else"])


def _branches() -> tuple[onnx.GraphProto, onnx.GraphProto]:
    then_branch = branch(
        "then",
        [
            helper.make_node("Tanh", ["x"], ["t1"]),
            helper.make_node("Mul", ["t1", "x"], ["t2"]),
            helper.make_node("MatMul", ["t2", "W"], ["then_y"]),
        ],
        ["then_y"],
    )
    else_branch = branch(
        "else",
        [
            helper.make_node("Mul", ["x", "x"], ["e1"]),
            helper.make_node("MatMul", ["e1", "V"], ["e2"]),
            helper.make_node("Sigmoid", ["e2"], ["else_y"]),
        ],
        ["else_y"],
    )
    return then_branch, else_branch


@SIGNS
def test_each_branch_matches_float64_differences(x: np.ndarray) -> None:
    then_branch, else_branch = _branches()
    m = model(
        [
            helper.make_node(
                "If", ["positive"], ["y"], name="branchy", then_branch=then_branch, else_branch=else_branch
            ),
            helper.make_node("Mul", ["y", "y"], ["out"]),
        ]
    )
    gradient = h.check_vjp(m, {"x": x})
    ifs = [n for n in h.build_gradient_model(m).graph.node if n.op_type == "If"]
    assert len(ifs) == 2 and np.abs(gradient["x"]).max() > 0  # the forward If and the backward one


@SIGNS
def test_gradients_through_the_branches_and_around_them_add_up(x: np.ndarray) -> None:
    then_branch, else_branch = _branches()
    m = model(
        [
            helper.make_node("If", ["positive"], ["y"], then_branch=then_branch, else_branch=else_branch),
            helper.make_node("MatMul", ["x", "W"], ["direct"]),
            helper.make_node("Mul", ["y", "direct"], ["out"]),
        ]
    )
    h.check_vjp(m, {"x": x})


@SIGNS
def test_several_outputs_an_unused_one_and_a_branch_that_ignores_the_input(x: np.ndarray) -> None:
    """Outputs (a, b, c): only a and c are used; the else branch's c is a constant (zero gradient)."""
    then_branch = branch(
        "then",
        [
            helper.make_node("Sin", ["x"], ["ta"]),
            helper.make_node("Cos", ["x"], ["tb"]),
            helper.make_node("Exp", ["x"], ["tc"]),
        ],
        ["ta", "tb", "tc"],
    )
    else_branch = branch(
        "else",
        [
            helper.make_node("Neg", ["x"], ["ea"]),
            helper.make_node("Abs", ["x"], ["eb"]),
            helper.make_node("Identity", ["W"], ["ec_w"]),
            helper.make_node("ReduceSum", ["ec_w"], ["ec"], keepdims=1),
        ],
        ["ea", "eb", "ec"],
    )
    m = model(
        [
            helper.make_node(
                "If", ["positive"], ["a", "b", "c"], then_branch=then_branch, else_branch=else_branch
            ),
            helper.make_node("Mul", ["a", "c"], ["out"]),
        ]
    )
    h.check_vjp(m, {"x": x})


@SIGNS
def test_a_branch_that_passes_the_input_through(x: np.ndarray) -> None:
    then_branch = branch("then", [helper.make_node("Identity", ["x"], ["then_x"])], ["then_x"])
    else_branch = branch("else", [helper.make_node("Mul", ["x", "x"], ["sq"])], ["sq"])
    m = model(
        [
            helper.make_node("If", ["positive"], ["y"], then_branch=then_branch, else_branch=else_branch),
            helper.make_node("Tanh", ["y"], ["out"]),
        ]
    )
    h.check_vjp(m, {"x": x})


@pytest.mark.parametrize(
    "x",
    [POSITIVE, NEGATIVE, np.concatenate([POSITIVE[:, :2], -POSITIVE[:, 2:] * 3], 1)],
    ids=["then-then", "else", "then-else"],
)
def test_nested_ifs(x: np.ndarray) -> None:
    """The then branch holds an If on the first column's sum."""
    inner = helper.make_node(
        "If",
        ["first_positive"],
        ["inner_y"],
        then_branch=branch("inner_then", [helper.make_node("Tanh", ["x"], ["it"])], ["it"]),
        else_branch=branch("inner_else", [helper.make_node("Sigmoid", ["x"], ["ie"])], ["ie"]),
    )
    then_branch = branch(
        "then",
        [
            helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["first"]),
            helper.make_node("ReduceSum", ["first"], ["first_total"], keepdims=0),
            helper.make_node("Greater", ["first_total", "zero"], ["first_positive"]),
            inner,
            helper.make_node("Mul", ["inner_y", "x"], ["then_y"]),
        ],
        ["then_y"],
    )
    else_branch = branch("else", [helper.make_node("Mul", ["x", "x"], ["else_y"])], ["else_y"])
    consts = {
        "starts": np.array([0], np.int64),
        "ends": np.array([2], np.int64),
        "axes": np.array([1], np.int64),
    }
    m = model(
        [helper.make_node("If", ["positive"], ["out"], then_branch=then_branch, else_branch=else_branch)],
        extra_inits=consts,
    )
    h.check_vjp(m, {"x": x})


@SIGNS
def test_constants_inside_branches_serve_the_rules_that_need_values(x: np.ndarray) -> None:
    """ReduceSum axes and a Reshape target written as Constant nodes inside the branches (legacy exports)."""

    def const(name: str, values: list[int]) -> onnx.NodeProto:
        return helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64))
        )

    then_branch = branch(
        "then",
        [
            const("then_axes", [1]),
            helper.make_node("Exp", ["x"], ["te"]),
            helper.make_node("ReduceSum", ["te", "then_axes"], ["then_y"], keepdims=1),
        ],
        ["then_y"],
    )
    else_branch = branch(
        "else",
        [
            const("else_shape", [0, 2, 2]),
            helper.make_node("Reshape", ["x", "else_shape"], ["er"]),
            helper.make_node("ReduceMax", ["er"], ["em"], axes=[2], keepdims=0),
            helper.make_node("ReduceSum", ["em", "one"], ["else_y"], keepdims=1),
        ],
        ["else_y"],
    )
    m = model(
        [
            helper.make_node("If", ["positive"], ["y"], then_branch=then_branch, else_branch=else_branch),
            helper.make_node("Sin", ["y"], ["out"]),
        ],
        extra_inits={"one": np.array([1], np.int64)},
    )
    h.check_vjp(m, {"x": x})


def test_an_op_without_a_rule_inside_a_branch_is_named_with_its_branch() -> None:
    then_branch = branch(
        "then", [helper.make_node("Det", ["x_square"], ["then_y"], name="determinant")], ["then_y"]
    )
    else_branch = branch(
        "else", [helper.make_node("ReduceSum", ["x_square"], ["else_y"], keepdims=0)], ["else_y"]
    )
    m = model(
        [
            helper.make_node("Reshape", ["x", "square"], ["x_square"]),
            helper.make_node(
                "If", ["positive"], ["out"], name="branchy", then_branch=then_branch, else_branch=else_branch
            ),
        ],
        extra_inits={"square": np.array([-1, 2, 2], np.int64)},
    )
    with pytest.raises(h.UnsupportedOpError) as caught:
        h.build_gradient_model(m)
    assert (caught.value.op_type, caught.value.node_name) == ("Det", "determinant")
    assert "in the then_branch of If node 'branchy'" in str(caught.value)


# --------------------------------------------------------------------------- constant conditions


def _constant_condition_model(
    condition: list[onnx.NodeProto], inits: dict[str, np.ndarray]
) -> onnx.ModelProto:
    then_branch, else_branch = _branches()
    graph = helper.make_graph(
        [
            *condition,
            helper.make_node("If", ["flag"], ["out"], then_branch=then_branch, else_branch=else_branch),
        ],
        "constant_if",
        [helper.make_tensor_value_info("x", D, ["N", 4])],
        [helper.make_tensor_value_info("out", D, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in {"W": W, "V": V, **inits}.items()],
    )
    result = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result.ir_version = 10
    return result


CONSTANT_CONDITIONS = {
    "initializer-true": ([], {"flag": np.array(True)}, "Tanh"),
    "initializer-false": ([], {"flag": np.array([False])}, "Sigmoid"),
    "constant-node": (
        [helper.make_node("Constant", [], ["flag"], value=numpy_helper.from_array(np.array(True)))],
        {},
        "Tanh",
    ),
    "computed-from-constants": (
        [helper.make_node("Less", ["two", "one"], ["flag"])],
        {"one": np.array(1.0, np.float32), "two": np.array(2.0, np.float32)},
        "Sigmoid",
    ),
}


@pytest.mark.parametrize("case", list(CONSTANT_CONDITIONS), ids=list(CONSTANT_CONDITIONS))
def test_a_constant_condition_is_folded_to_the_taken_branch(case: str) -> None:
    nodes, inits, taken_op = CONSTANT_CONDITIONS[case]
    m = _constant_condition_model(nodes, inits)
    gradient_model = h.build_gradient_model(m)
    ops = [n.op_type for n in gradient_model.graph.node]
    assert "If" not in ops and taken_op in ops
    h.check_vjp(m, {"x": h.randn(3, 4, seed=4)})


def test_an_overridable_condition_is_not_folded() -> None:
    """A condition that is a graph input with a stored default may change per run: the If stays."""
    m = _constant_condition_model([], {"flag": np.array(True)})
    m.graph.input.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
    gradient_model = h.build_gradient_model(m, ["x"])
    assert sum(n.op_type == "If" for n in gradient_model.graph.node) == 2
    for flag in (True, False):
        h.check_vjp(m, {"x": h.randn(3, 4, seed=4), "flag": np.array(flag)}, ["x"])


def test_folding_renames_branch_tensors_that_clash_with_the_main_graph() -> None:
    """Main graph and taken branch both define ``t2`` (onnxruntime refuses that while the If stands)."""

    def clashing(inner: str) -> onnx.ModelProto:
        then_branch, else_branch = _branches()
        for node in then_branch.node:
            node.input[:] = [inner if name == "t2" else name for name in node.input]
            node.output[:] = [inner if name == "t2" else name for name in node.output]
        graph = helper.make_graph(
            [
                helper.make_node("Neg", ["x"], ["t2"]),
                helper.make_node("ReduceSum", ["t2"], ["t2_sum"], keepdims=1),
                helper.make_node("If", ["flag"], ["y"], then_branch=then_branch, else_branch=else_branch),
                helper.make_node("Add", ["y", "t2_sum"], ["out"]),
            ],
            "clash",
            [helper.make_tensor_value_info("x", D, ["N", 4])],
            [helper.make_tensor_value_info("out", D, None)],
            initializer=[
                numpy_helper.from_array(v, k) for k, v in {"W": W, "V": V, "flag": np.array(True)}.items()
            ],
        )
        result = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        result.ir_version = 10
        return result

    x = h.randn(3, 4, seed=4)
    gradient_model = h.build_gradient_model(clashing("t2"))
    names = [o for n in gradient_model.graph.node for o in n.output]
    assert len(names) == len(set(names)) and "t2__inlined" in names
    meta = h.read_gradient_metadata(gradient_model)
    cotangent = h.randn(3, 3, seed=6)
    got = h.session(gradient_model).run([meta.gradients["x"]], {"x": x, meta.cotangent: cotangent})[0]
    expected = h.check_vjp(clashing("t2_in_branch"), {"x": x}, seed=0)["x"]  # the same model, valid as it is
    renamed = h.build_gradient_model(clashing("t2_in_branch"))
    meta_renamed = h.read_gradient_metadata(renamed)
    reference = h.session(renamed).run(
        [meta_renamed.gradients["x"]], {"x": x, meta_renamed.cotangent: cotangent}
    )[0]
    np.testing.assert_allclose(got, reference, rtol=1e-12)
    assert np.abs(expected).max() > 0


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["then", "else"])
def test_resize_scales_inside_a_branch_stay_constant(sign: float) -> None:
    """A float Constant a rule must read (Resize scales) is hoisted out of the branch, not exposed as a weight."""
    f32 = TensorProto.FLOAT
    scales = helper.make_node(
        "Constant", [], ["scales"], value=numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32))
    )
    then_branch = helper.make_graph(
        [scales, helper.make_node("Resize", ["image", "", "scales"], ["then_y"], mode="nearest")],
        "then",
        [],
        [helper.make_tensor_value_info("then_y", f32, ["N", 1, 4, 4])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Tile", ["image", "reps"], ["else_y"])],
        "else",
        [],
        [helper.make_tensor_value_info("else_y", f32, ["N", 1, 4, 4])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "square"], ["image"]),
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("Greater", ["total", "zero"], ["positive"]),
            helper.make_node("If", ["positive"], ["up"], then_branch=then_branch, else_branch=else_branch),
            helper.make_node("Mul", ["up", "weights"], ["out"]),
        ],
        "resize_branch",
        [helper.make_tensor_value_info("x", f32, ["N", 4])],
        [helper.make_tensor_value_info("out", f32, None)],
        initializer=[
            numpy_helper.from_array(v, k)
            for k, v in {
                "square": np.array([-1, 1, 2, 2], np.int64),
                "zero": np.array(0.0, np.float32),
                "reps": np.array([1, 1, 2, 2], np.int64),
                "weights": RNG.normal(size=(1, 1, 4, 4)).astype(np.float32),
            }.items()
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    gradient_model = h.build_gradient_model(m)
    assert "scales" not in h.read_gradient_metadata(gradient_model).weights
    x = (np.abs(h.randn(3, 4, seed=2)) + 0.1).astype(np.float32) * sign
    h.check_vjp(m, {"x": x}, eps=0.05, tol=1e-4)
