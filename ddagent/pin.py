"""Pin ("Patch INfo"): per-object tracing settings (service, tags, tracer) for integrations.

A Pin is stored on the object it configures (``_datadog_pin``), so a Pin on a class is seen by
its instances until an instance gets its own. Pins are immutable: ``override`` and ``clone``
make new ones.
"""

from __future__ import annotations

from typing import Any, Optional

from ddagent._logging import get_logger

log = get_logger("ddagent.pin")

PIN_ATTR = "_datadog_pin"  # where a Pin is stored (hooks/registry.py reads it directly)


class Pin:
    """Tracing settings attached to an object: ``Pin.override(client, service="cache")``."""

    __slots__ = ("service", "app", "app_type", "tags", "tracer")
    service: Optional[str]
    app: Optional[str]
    app_type: Optional[str]
    tags: Optional[dict[str, Any]]
    tracer: Any

    def __init__(
        self,
        service: Optional[str],
        app: Optional[str] = None,
        app_type: Optional[str] = None,
        tags: Optional[dict[str, Any]] = None,
        tracer: Any = None,
    ) -> None:
        if tracer is None:
            from ddagent.tracer import tracer as global_tracer

            tracer = global_tracer
        for name, value in (("service", service), ("app", app), ("app_type", app_type),
                            ("tags", tags), ("tracer", tracer)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("can't mutate a pin, use override() or clone() instead")

    def __repr__(self) -> str:
        return (f"Pin(service={self.service!r}, app={self.app!r}, app_type={self.app_type!r}, "
                f"tags={self.tags!r}, tracer={self.tracer!r})")

    @staticmethod
    def get_from(obj: Any) -> Optional[Pin]:
        """The Pin of ``obj`` (its own, or its class's), or None."""
        pin: Optional[Pin] = getattr(obj, PIN_ATTR, None)
        if pin is not None:
            return pin
        get = getattr(obj, "__getddpin__", None)
        return get() if get is not None else None

    @classmethod
    def override(
        cls,
        obj: Any,
        service: Optional[str] = None,
        app: Optional[str] = None,
        app_type: Optional[str] = None,
        tags: Optional[dict[str, Any]] = None,
        tracer: Any = None,
    ) -> Optional[Pin]:
        """Attach to ``obj`` a copy of its Pin with the given fields changed; return the copy."""
        if obj is None:
            return None
        pin = cls.get_from(obj) or cls(service)
        new = pin.clone(service=service, app=app, app_type=app_type, tags=tags, tracer=tracer)
        new.onto(obj)
        return new

    def enabled(self) -> bool:
        """Whether spans should be created for the pinned object."""
        return bool(self.tracer) and self.tracer.enabled

    def onto(self, obj: Any, send: bool = True) -> None:
        """Attach this Pin to ``obj`` (objects that refuse attributes are logged and skipped)."""
        if send:
            try:
                self.tracer.set_service_info(self.service, self.app, self.app_type)
            except Exception:
                log.debug("ddagent: set_service_info failed", exc_info=True)
        try:
            setter = getattr(obj, "__setddpin__", None)
            if setter is not None:
                setter(self)
            else:
                setattr(obj, PIN_ATTR, self)
        except (AttributeError, TypeError):
            log.debug("ddagent: cannot attach a pin to %r", obj, exc_info=True)

    def clone(
        self,
        service: Optional[str] = None,
        app: Optional[str] = None,
        app_type: Optional[str] = None,
        tags: Optional[dict[str, Any]] = None,
        tracer: Any = None,
    ) -> Pin:
        """A copy with the given fields replaced (``tags`` replaces the tags; it does not merge)."""
        if tags is None and self.tags is not None:
            tags = dict(self.tags)
        return Pin(
            service=service or self.service,
            app=app or self.app,
            app_type=app_type or self.app_type,
            tags=tags,
            tracer=tracer or self.tracer,
        )
