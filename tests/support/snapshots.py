"""What Redis holds, to compare before and after a request."""


def redis_state(redis_client):
    """Every key with its type and value, to prove a request changed nothing."""
    readers = {
        "string": redis_client.get,
        "hash": redis_client.hgetall,
        "set": redis_client.smembers,
        "zset": lambda key: redis_client.zrange(key, 0, -1, withscores=True),
        "list": lambda key: redis_client.lrange(key, 0, -1),
    }
    return {
        key: (kind, readers[kind](key))
        for key in redis_client.keys("*")
        if (kind := redis_client.type(key))
    }
