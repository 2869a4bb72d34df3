"""TitanStore: a Redis-compatible key-value store, its pure core.

The modules here do no I/O and read no clock; the server and the AOF files
(``titan.roles.store``, ``titan.store.aof``) wrap them::

    socket bytes --> resp.RespParser.feed() --> [[b"SET", k, v], ...]
                                                    |
                          engine.Engine.execute(args, now_ms)
                                                    |
                     (reply, aof commands) --> resp.encode_reply() --> socket
                                          \\--> resp.encode_command() --> AOF

``reply`` holds the reply value types, ``keyspace`` the data, TTLs and SCAN
positions, the ``cmd_*`` modules one command family each, ``pubsub`` the
channel registry and ``glob`` the Redis pattern matcher.
"""
