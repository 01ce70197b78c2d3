"""What an access log line holds, in the order it is written."""

ACCESS_LINE_FIELDS = [
    "time",
    "level",
    "logger",
    "message",
    "method",
    "path",
    "endpoint",
    "status",
    "duration_ms",
    "user_id",
    "request_id",
    "remote_addr",
]
