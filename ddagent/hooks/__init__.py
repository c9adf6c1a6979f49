"""Instrumentation engine: the import finder, code rewriting, and one module per supported library.

Nothing is imported here on purpose: importing ``ddagent.hooks`` must not pull in any integration.
"""
