"""Talking to a model: terminal chat, web UI and an OpenAI-compatible server."""
