"""Helpers that tests import: servers they start (redis-server, a Redis Cluster, a
MongoDB stand-in, gunicorn hosts, the production gunicorn), process tools (stop, wait,
children, CPU used), the multi-process tests' app, HTTP and thread helpers. The
benchmark (bench/) imports some of them; they never import bench/."""
