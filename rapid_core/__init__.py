"""RAPID: large-batch inference, off-policy importance-weighted mini-batch policy-gradient updates.

The algorithm as a plain library (no web, queue or database imports). See ``../shared/RAPID.md``.
"""

__version__ = "0.1.0"
