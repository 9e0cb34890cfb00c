"""The compact agent loop (not built yet: see the agent issue).

It will reach the sandbox only through `sandbox.run` / `sandbox.arun` and
sessions; it never builds a bwrap argv itself.
"""
