"""The API in-process through Flask's test client, by domain."""
