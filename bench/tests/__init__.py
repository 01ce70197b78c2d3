"""The benchmark's own tests: it measures what ships, and counts CPU correctly."""
