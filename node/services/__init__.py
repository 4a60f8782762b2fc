"""The container side: where services are, and the HTTP protocol to them."""
