"""Who may call: signed requests (Gonka's scheme), API keys, quotas and usage.

A domain of its own: no aiohttp, no SQLAlchemy, no config imports. The store
implements `AuthRepository` (ports.py); the HTTP side (node/api/auth.py) only
extracts headers and maps refusals to errors.
"""
