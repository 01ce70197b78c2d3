"""Order and sale events: recorded with the change they describe, read in order."""
