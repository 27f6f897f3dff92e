"""Django's Redis cache (`django.core.cache.backends.redis.RedisCache`, on redis-py) against a
kvs-server: the whole cache API, expiry by timeout included. Run by
tests/tests/redis_multi.rs as

    python django_cache.py HOST PORT

Every check is an assert; the last line printed is `ok`."""

import sys
import time

import django
from django.conf import settings

host, port = sys.argv[1], sys.argv[2]
settings.configure(
    CACHES={
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://{host}:{port}/0",
            "KEY_PREFIX": "site",
        }
    }
)
django.setup()

from django.core.cache import cache  # noqa: E402

cache.clear()
assert cache.get("missing") is None
assert cache.get("missing", "default") == "default"

cache.set("greeting", "hello")
assert cache.get("greeting") == "hello"
# Any picklable value (Django pickles what is not an integer).
cache.set("obj", {"a": [1, 2, 3], "b": ("x", None)})
assert cache.get("obj") == {"a": [1, 2, 3], "b": ("x", None)}
cache.set("int", 42)
assert cache.get("int") == 42

# add: only if missing.
assert cache.add("greeting", "other") is False
assert cache.get("greeting") == "hello"
assert cache.add("new", "value") is True
assert cache.get("new") == "value"

# get_many / set_many (set_many pipelines SETs, with a timeout in a MULTI/EXEC-free pipeline).
assert cache.set_many({"m1": 1, "m2": "two", "m3": [3]}) == []
assert cache.get_many(["m1", "m2", "m3", "missing"]) == {"m1": 1, "m2": "two", "m3": [3]}

# delete / delete_many / has_key.
assert cache.has_key("m1") is True
assert cache.delete("m1") is True
assert cache.delete("m1") is False
assert cache.has_key("m1") is False
cache.delete_many(["m2", "m3"])
assert cache.get_many(["m2", "m3"]) == {}

# incr / decr.
cache.set("hits", 10)
assert cache.incr("hits") == 11
assert cache.incr("hits", 5) == 16
assert cache.decr("hits") == 15
assert cache.decr("hits", 20) == -5
assert cache.get("hits") == -5
try:
    cache.incr("nope")
    raise AssertionError("incr of a missing key did not raise")
except ValueError:
    pass

# Expiry by timeout: set with a timeout, touch to change it, timeout=None for never.
cache.set("short", "v", timeout=1)
cache.set("forever", "v", timeout=None)
cache.set("touched", "v", timeout=1)
assert cache.touch("touched", timeout=None) is True
assert cache.touch("missing", timeout=10) is False
assert cache.get("short") == "v"
# The client's key names, as Django makes them, carry the deadlines on the server.
raw = cache._cache.get_client(write=False)
assert 0 < raw.pttl(cache.make_and_validate_key("short")) <= 1000
assert raw.ttl(cache.make_and_validate_key("forever")) == -1
assert raw.ttl(cache.make_and_validate_key("touched")) == -1
# Polls for the expiry, not a time bound: the key must be gone once its second has passed.
deadline = time.monotonic() + 30
while cache.get("short") is not None:
    assert time.monotonic() < deadline, "a key set with timeout=1 never expired"
    time.sleep(0.05)
assert cache.has_key("short") is False
assert cache.get("forever") == "v" and cache.get("touched") == "v"
# A timeout of 0 expires at once.
cache.set("zero", "v", timeout=0)
assert cache.get("zero") is None

# clear: every key gone (Django's RedisCache flushes the database).
cache.clear()
assert cache.get_many(["greeting", "obj", "int", "new", "forever"]) == {}
assert raw.dbsize() == 0

print("ok")
