"""The .proto files of the runtime and the Python modules generated from them.

Not written yet.
"""
