"""In-process cluster nodes (engines on one PostgreSQL database): their membership, and
destinations whose slot a chosen node owns."""

from __future__ import annotations

from hookd.engine import Engine
from hookd.engine.cluster import Membership, rendezvous, slot_of
from tests.support.receiver import Receiver


def membership_of(node: Engine) -> Membership:
    assert node._membership is not None
    return node._membership


def url_owned_by(receiver: Receiver, owner: str, nodes: list[str]) -> str:
    """A destination on ``receiver`` whose slot rendezvous gives to ``owner`` among ``nodes``."""
    owners = rendezvous(nodes)
    return next(url for i in range(10_000) if owners[slot_of(url := receiver.url(f"/d{i}"))] == owner)
