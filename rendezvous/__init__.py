"""The rendezvous relay that pairs workers so they can hand decoder state to each other.

Not written yet.
"""
