"""The versioned gRPC contract (``mollify.v1``) and its generated Python stubs."""

__all__: list[str] = []
