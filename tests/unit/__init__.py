"""One module's rules on its own."""
