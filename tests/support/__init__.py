"""Helpers that tests import: servers they start (redis-server, a Redis Cluster, a
MongoDB stand-in, gunicorn hosts), the multi-process tests' app, HTTP and thread helpers."""
