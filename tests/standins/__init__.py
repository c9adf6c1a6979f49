"""Servers the integration tests talk to where no real server can be installed (see each module)."""
