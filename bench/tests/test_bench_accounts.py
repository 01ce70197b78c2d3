"""The login benchmark's accounts: looked up as MongoDB's index would, never stale."""

import mongomock

from bench.app import _Database


def test_users_are_found_by_email_and_a_write_turns_the_dict_off():
    db = _Database(mongomock.MongoClient().flashcart)
    db.users.insert_many([{"email": f"s{n}@example.com", "n": n} for n in range(3)])
    db.users.index()

    assert db.users.find_one({"email": "s1@example.com"})["n"] == 1
    assert db.users.find_one({"email": "nobody@example.com"}) is None
    assert db["users"] is db.users

    db.users.update_one({"email": "s1@example.com"}, {"$set": {"n": 10}})
    assert db.users.find_one({"email": "s1@example.com"})["n"] == 10
