"""Pub/sub: which subscriber listens to which channel or pattern, and who gets
a published message.

What this module owns: the registry behind SUBSCRIBE, UNSUBSCRIBE,
PSUBSCRIBE, PUNSUBSCRIBE and PUBLISH, and the exact replies Redis sends for
them.  It is pure: subscribers are opaque ids the server picks (one per
connection); the server writes the returned replies to the right sockets::

    server --subscribe(sid, [ch])--> PubSub --> [["subscribe", ch, count]]  (to sid)
    server --publish(ch, msg)-----> PubSub --> (receivers, [(sid, ["message", ch, msg]), ...])

Replies are :class:`~titan.store.reply.PushReply` lists: arrays in RESP2,
push messages in RESP3.  A subscriber listening to a channel directly and
through a pattern gets the message twice, and is counted twice, as in Redis.
Patterns use :mod:`titan.store.glob`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from titan.store.glob import GlobPattern, compile_glob
from titan.store.reply import PushReply, Reply

__all__ = ["PubSub"]

_SUBSCRIBE, _UNSUBSCRIBE = b"subscribe", b"unsubscribe"
_PSUBSCRIBE, _PUNSUBSCRIBE = b"psubscribe", b"punsubscribe"
_MESSAGE, _PMESSAGE = b"message", b"pmessage"


class _Registry:
    """One direction of subscriptions (channels, or patterns): name <-> subscribers.

    Dicts used as ordered sets keep subscription order, so replies and
    deliveries come out in a stable order.
    """

    def __init__(self) -> None:
        self.subscribers: Dict[bytes, Dict[int, None]] = {}
        self.names: Dict[int, Dict[bytes, None]] = {}

    def add(self, sid: int, name: bytes) -> None:
        self.subscribers.setdefault(name, {})[sid] = None
        self.names.setdefault(sid, {})[name] = None

    def remove(self, sid: int, name: bytes) -> None:
        listeners = self.subscribers.get(name)
        if listeners is not None:
            listeners.pop(sid, None)
            if not listeners:
                del self.subscribers[name]
        held = self.names.get(sid)
        if held is not None:
            held.pop(name, None)
            if not held:
                del self.names[sid]

    def held(self, sid: int) -> List[bytes]:
        return list(self.names.get(sid, ()))

    def count(self, sid: int) -> int:
        return len(self.names.get(sid, ()))


class PubSub:
    """The pub/sub registry of one server."""

    def __init__(self) -> None:
        self._channels = _Registry()
        self._patterns = _Registry()
        self._compiled: Dict[bytes, GlobPattern] = {}

    def subscribe(self, sid: int, channels: List[bytes]) -> List[Reply]:
        """Subscribe ``sid`` to ``channels``; one ``["subscribe", ch, count]`` each."""
        replies: List[Reply] = []
        for channel in channels:
            self._channels.add(sid, channel)
            replies.append(PushReply([_SUBSCRIBE, channel, self.count(sid)]))
        return replies

    def unsubscribe(self, sid: int, channels: List[bytes]) -> List[Reply]:
        """Unsubscribe from ``channels`` (all when empty); one confirmation each.

        With nothing to leave, the reply is ``["unsubscribe", nil, count]``.
        """
        return self._leave(self._channels, _UNSUBSCRIBE, sid, channels)

    def psubscribe(self, sid: int, patterns: List[bytes]) -> List[Reply]:
        """Subscribe ``sid`` to glob ``patterns``; one ``["psubscribe", p, count]`` each."""
        replies: List[Reply] = []
        for pattern in patterns:
            self._patterns.add(sid, pattern)
            if pattern not in self._compiled:
                self._compiled[pattern] = compile_glob(pattern)
            replies.append(PushReply([_PSUBSCRIBE, pattern, self.count(sid)]))
        return replies

    def punsubscribe(self, sid: int, patterns: List[bytes]) -> List[Reply]:
        """Unsubscribe from ``patterns`` (all when empty); one confirmation each."""
        replies = self._leave(self._patterns, _PUNSUBSCRIBE, sid, patterns)
        for pattern in patterns or list(self._compiled):
            if pattern not in self._patterns.subscribers:
                self._compiled.pop(pattern, None)
        return replies

    def publish(self, channel: bytes, message: bytes) -> Tuple[int, List[Tuple[int, Reply]]]:
        """Deliver ``message``: (receivers, [(sid, reply), ...]) in subscription order."""
        deliveries: List[Tuple[int, Reply]] = []
        for sid in self._channels.subscribers.get(channel, ()):
            deliveries.append((sid, PushReply([_MESSAGE, channel, message])))
        for pattern, listeners in self._patterns.subscribers.items():
            if self._compiled[pattern].match(channel):
                for sid in listeners:
                    deliveries.append((sid, PushReply([_PMESSAGE, pattern, channel, message])))
        return len(deliveries), deliveries

    def drop(self, sid: int) -> None:
        """Forget every subscription of ``sid`` (its connection closed)."""
        self._leave(self._channels, _UNSUBSCRIBE, sid, [])
        self.punsubscribe(sid, [])

    def count(self, sid: int) -> int:
        """Channels plus patterns ``sid`` holds; 0 means it is not in subscribed mode."""
        return self._channels.count(sid) + self._patterns.count(sid)

    def channels(self, pattern: Optional[bytes] = None) -> List[bytes]:
        """Channels with at least one subscriber, matching ``pattern`` if given (PUBSUB CHANNELS)."""
        names = list(self._channels.subscribers)
        if pattern is None:
            return names
        matcher = compile_glob(pattern)
        return [name for name in names if matcher.match(name)]

    def numsub(self, channels: List[bytes]) -> List[Reply]:
        """Flat ``[channel, subscribers, ...]`` (PUBSUB NUMSUB)."""
        reply: List[Reply] = []
        for channel in channels:
            reply.extend((channel, len(self._channels.subscribers.get(channel, ()))))
        return reply

    def numpat(self) -> int:
        """Number of distinct patterns subscribed to (PUBSUB NUMPAT)."""
        return len(self._patterns.subscribers)

    def _leave(self, registry: _Registry, kind: bytes, sid: int, names: List[bytes]) -> List[Reply]:
        targets = names or registry.held(sid)
        if not targets:
            return [PushReply([kind, None, self.count(sid)])]
        replies: List[Reply] = []
        for name in targets:
            registry.remove(sid, name)
            replies.append(PushReply([kind, name, self.count(sid)]))
        return replies
