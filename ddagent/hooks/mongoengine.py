"""MongoEngine: its operations are traced as the PyMongo commands they send.

MongoEngine has no network layer of its own: every query, save and delete becomes a PyMongo
command, which the ``pymongo`` integration already turns into a ``pymongo.cmd`` span (with the
collection and the filter shape). Enabling ``mongoengine`` therefore switches the ``pymongo``
integration on when MongoEngine is imported; disabling it switches ``pymongo`` off again only
if it was this integration that switched it on.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable

from ddagent.hooks import registry
from ddagent.hooks.registry import Integration


class _PymongoThroughMongoengine:
    """A probe that enables the pymongo integration instead of instrumenting anything itself."""

    module = "mongoengine"

    def install(self, module: ModuleType, integration: Integration) -> Callable[[], None] | None:
        if "pymongo" in registry.get_patched_modules():
            return None
        registry.enable("pymongo")
        return lambda: registry.disable("pymongo")


integration = Integration("mongoengine", service="pymongo", component="pymongo",
                          probes=[_PymongoThroughMongoengine()])
