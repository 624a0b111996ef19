"""The webhooks in memory, so the hot path never reads them from disk.

The registry is updated only after a change is committed, and actors consult it at send time:
that is how a new URL, secret, credential or status applies to the very next attempt.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from hookd.engine.model import Status, Webhook


class WebhookRegistry:
    def __init__(self, default_rate: float) -> None:
        self._default_rate = default_rate
        self._by_id: dict[str, Webhook] = {}
        self._by_url: dict[str, set[str]] = defaultdict(set)
        self._per_type: Counter[tuple[str, str]] = Counter()

    def load(self, webhooks: list[Webhook]) -> None:
        for webhook in webhooks:
            self.put(webhook)

    def get(self, webhook_id: str) -> Webhook | None:
        return self._by_id.get(webhook_id)

    def put(self, webhook: Webhook) -> None:
        old = self._by_id.get(webhook.id)
        if old is not None:
            self._per_type[(old.resource, old.event)] -= 1
            if old.url != webhook.url:
                self._discard_url(old)
        self._by_id[webhook.id] = webhook
        self._by_url[webhook.url].add(webhook.id)
        self._per_type[(webhook.resource, webhook.event)] += 1

    def remove(self, webhook_id: str) -> Webhook | None:
        old = self._by_id.pop(webhook_id, None)
        if old is not None:
            self._per_type[(old.resource, old.event)] -= 1
            self._discard_url(old)
        return old

    def _discard_url(self, webhook: Webhook) -> None:
        ids = self._by_url.get(webhook.url)
        if ids is not None:
            ids.discard(webhook.id)
            if not ids:
                del self._by_url[webhook.url]

    def rate_for(self, url: str) -> float:
        """The URL's request rate: the lowest among its active webhooks, each at its own rate or,
        when it sets none (0), the default; the default when none is active. A webhook that sets
        no rate asks for the default, so another on the same URL cannot raise it past that."""
        rates = [
            hook.rate_limit or self._default_rate
            for hook_id in self._by_url.get(url, ())
            if (hook := self._by_id[hook_id]).status is Status.ACTIVE
        ]
        return min(rates, default=self._default_rate)

    def subscriber_count(self, resource: str, event: str) -> int:
        """How many webhooks (active or not) subscribe to the event type."""
        return self._per_type[(resource, event)]

    def webhooks_at(self, url: str) -> list[Webhook]:
        return [self._by_id[hook_id] for hook_id in self._by_url.get(url, ())]

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[Webhook]:
        return list(self._by_id.values())
