"""``mollify.v1``: the explanation service's contract (``explainer.proto``) and its generated stubs.

Regenerate the stubs from the repository root after editing the ``.proto``:

    python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. protos/mollify/v1/explainer.proto
"""

__all__ = ["explainer_pb2", "explainer_pb2_grpc"]
