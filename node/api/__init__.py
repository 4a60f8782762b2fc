"""The HTTP layer: parse and validate, call the domain, render JSON."""
