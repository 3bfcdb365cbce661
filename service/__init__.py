"""The gRPC explanation service, its model repository, settings and the CLI client."""
