"""Real processes together: concurrency, failures, clusters, servers and the image."""
