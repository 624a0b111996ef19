"""Server reflection that keeps the proto's comments, so ``grpcurl describe`` documents the API.

grpcio's reflection service serialises descriptors with ``CopyToProto``, which drops source
info (the comments). This pool hands it file descriptors whose ``CopyToProto`` copies the full
``FileDescriptorProto`` from the descriptor set ``make proto`` writes next to the generated code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool

from hookd.v1 import hookd_pb2


class _DocumentedFile:
    def __init__(self, descriptor: Any, documented: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
        self._descriptor = descriptor
        self._documented = documented
        self.name = descriptor.name

    @property
    def dependencies(self) -> list[_DocumentedFile]:
        return [_DocumentedFile(dep, self._documented) for dep in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        if self.name in self._documented:
            proto.CopyFrom(self._documented[self.name])
        else:
            self._descriptor.CopyToProto(proto)


class DocumentedPool:
    """Wraps the default descriptor pool; file look-ups come back with their comments."""

    def __init__(self) -> None:
        self._pool = descriptor_pool.Default()
        # hookd.v1 is a namespace package, so importlib.resources cannot address it; the file
        # sits next to the generated module.
        raw = (Path(hookd_pb2.__file__).parent / "descriptors.binpb").read_bytes()
        files = descriptor_pb2.FileDescriptorSet.FromString(raw).file
        self._documented = {f.name: f for f in files}

    def FindFileByName(self, name: str) -> _DocumentedFile:
        return _DocumentedFile(self._pool.FindFileByName(name), self._documented)

    def FindFileContainingSymbol(self, symbol: str) -> _DocumentedFile:
        return _DocumentedFile(self._pool.FindFileContainingSymbol(symbol), self._documented)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)
