"""An Infernet-compatible node server."""

__version__ = "0.1.0"
# The reference node version whose REST contract this node implements.
API_VERSION = "1.4.0"
