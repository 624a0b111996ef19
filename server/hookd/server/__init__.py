"""The hookd server: gRPC API over the trio engine, in one process."""
