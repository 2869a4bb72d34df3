"""Pub/sub registry: subscription confirmations, fan-out to channels and
patterns, unsubscribe-all, and dropped connections.

Subscriber ids stand for connections; a test reads the replies a server
would write to each of them.
"""
from __future__ import annotations

from typing import Dict, List

from titan.store.pubsub import PubSub
from titan.store.reply import PushReply, Reply
from titan.store.resp import encode_reply

ALICE, BOB, CAROL = 1, 2, 3


def inboxes(deliveries: List[tuple]) -> Dict[int, List[Reply]]:
    boxes: Dict[int, List[Reply]] = {}
    for sid, reply in deliveries:
        boxes.setdefault(sid, []).append(reply)
    return boxes


def test_subscribe_confirms_each_channel_with_a_running_count() -> None:
    hub = PubSub()
    assert hub.subscribe(ALICE, [b"news", b"sport"]) == [
        [b"subscribe", b"news", 1],
        [b"subscribe", b"sport", 2],
    ]
    assert hub.subscribe(ALICE, [b"news"]) == [[b"subscribe", b"news", 2]]  # no double subscription
    assert hub.psubscribe(ALICE, [b"n*"]) == [[b"psubscribe", b"n*", 3]]
    assert hub.count(ALICE) == 3
    assert hub.count(BOB) == 0
    assert all(isinstance(r, PushReply) for r in hub.subscribe(BOB, [b"x"]))


def test_publish_fans_out_to_channel_and_pattern_subscribers() -> None:
    hub = PubSub()
    hub.subscribe(ALICE, [b"jobs.done"])
    hub.psubscribe(BOB, [b"jobs.*"])
    hub.psubscribe(CAROL, [b"logs.*"])
    hub.subscribe(BOB, [b"jobs.done"])
    receivers, deliveries = hub.publish(b"jobs.done", b"42")
    assert receivers == 3  # BOB hears it twice: channel and pattern, as Redis counts
    assert inboxes(deliveries) == {
        ALICE: [[b"message", b"jobs.done", b"42"]],
        BOB: [[b"message", b"jobs.done", b"42"], [b"pmessage", b"jobs.*", b"jobs.done", b"42"]],
    }
    assert hub.publish(b"nobody.listens", b"x") == (0, [])


def test_patterns_use_redis_globs() -> None:
    hub = PubSub()
    hub.psubscribe(ALICE, [b"user:[0-9]*:login", b"h?llo"])
    assert hub.publish(b"user:7:login", b"m")[0] == 1
    assert hub.publish(b"user:x:login", b"m")[0] == 0
    assert hub.publish(b"hallo", b"m")[1] == [(ALICE, [b"pmessage", b"h?llo", b"hallo", b"m"])]


def test_unsubscribe_some_and_all() -> None:
    hub = PubSub()
    hub.subscribe(ALICE, [b"a", b"b", b"c"])
    hub.psubscribe(ALICE, [b"p*"])
    assert hub.unsubscribe(ALICE, [b"b", b"never"]) == [
        [b"unsubscribe", b"b", 3],
        [b"unsubscribe", b"never", 3],
    ]
    assert hub.unsubscribe(ALICE, []) == [[b"unsubscribe", b"a", 2], [b"unsubscribe", b"c", 1]]
    assert hub.unsubscribe(ALICE, []) == [[b"unsubscribe", None, 1]]
    assert hub.punsubscribe(ALICE, []) == [[b"punsubscribe", b"p*", 0]]
    assert hub.punsubscribe(ALICE, []) == [[b"punsubscribe", None, 0]]
    assert hub.count(ALICE) == 0
    assert hub.publish(b"a", b"m") == (0, [])
    assert hub.publish(b"pq", b"m") == (0, [])
    assert hub.numpat() == 0


def test_drop_forgets_a_closed_connection() -> None:
    hub = PubSub()
    hub.subscribe(ALICE, [b"ch"])
    hub.psubscribe(ALICE, [b"c*"])
    hub.subscribe(BOB, [b"ch"])
    hub.drop(ALICE)
    assert hub.count(ALICE) == 0
    assert hub.publish(b"ch", b"m") == (1, [(BOB, [b"message", b"ch", b"m"])])
    assert hub.channels() == [b"ch"]
    assert hub.numsub([b"ch", b"other"]) == [b"ch", 1, b"other", 0]
    hub.drop(BOB)
    assert hub.channels() == []
    hub.drop(CAROL)  # never subscribed: nothing to do


def test_replies_encode_as_arrays_in_resp2_and_pushes_in_resp3() -> None:
    hub = PubSub()
    (confirmation,) = hub.subscribe(ALICE, [b"ch"])
    assert encode_reply(confirmation) == b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
    assert encode_reply(confirmation, resp3=True) == b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
    (none_left,) = hub.unsubscribe(BOB, [])
    assert encode_reply(none_left) == b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"


def test_binary_and_non_ascii_channels_and_messages() -> None:
    hub = PubSub()
    channel, message = "канал".encode(), b"\x00\r\n\xff"
    hub.subscribe(ALICE, [channel])
    assert hub.publish(channel, message) == (1, [(ALICE, [b"message", channel, message])])
