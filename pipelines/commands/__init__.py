"""Subcommands of ``geoxai``; each module exposes ``register(app)``."""
