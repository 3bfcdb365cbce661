"""The ``mollify`` protobuf packages, one folder per API version."""

__all__: list[str] = []
