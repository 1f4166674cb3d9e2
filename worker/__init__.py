"""The worker runtime (and later the cloud-function entry point); workers dial out, never listen.

Not written yet.
"""
