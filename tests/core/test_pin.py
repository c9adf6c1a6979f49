from __future__ import annotations

import pytest

import ddagent
from ddagent import Pin
from tests.core.conftest import make_tracer


class Client:
    pass


def test_defaults_and_immutability() -> None:
    pin = Pin("svc")
    assert pin.tracer is ddagent.tracer and pin.enabled()
    with pytest.raises(AttributeError, match="can't mutate a pin"):
        pin.service = "other"  # type: ignore[misc]


def test_class_pin_is_seen_by_instances_until_overridden() -> None:
    class Conn:
        pass

    Pin("db").onto(Conn)
    a, b = Conn(), Conn()
    assert Pin.get_from(a).service == "db"
    new = Pin.override(a, service="db-a", tags={"k": "v"})
    assert new is Pin.get_from(a) and new.service == "db-a" and new.tags == {"k": "v"}
    assert Pin.get_from(b).service == "db" and Pin.get_from(Conn).service == "db"


def test_override_returns_the_new_pin_and_works_on_falsy_objects() -> None:
    class Empty(list):
        pass

    empty = Empty()
    pin = Pin.override(empty, service="cache")
    assert pin is not None and Pin.get_from(empty) is pin
    assert Pin.override(None, service="x") is None
    assert Pin.get_from(None) is None


def test_clone_rules() -> None:
    t = make_tracer()
    pin = Pin("svc", app="app", app_type="db", tags={"a": "1"}, tracer=t)
    same = pin.clone()
    assert (same.service, same.app, same.app_type, same.tracer) == ("svc", "app", "db", t)
    assert same.tags == {"a": "1"} and same.tags is not pin.tags
    replaced = pin.clone(service="", tags={"b": "2"})
    assert replaced.service == "svc" and replaced.tags == {"b": "2"}  # replace, no merge


def test_enabled_follows_the_tracer() -> None:
    t = make_tracer()
    pin = Pin("svc", tracer=t)
    t.enabled = False
    assert not pin.enabled()


def test_dunder_hooks_and_slots_objects() -> None:
    class Custom:
        def __init__(self) -> None:
            self.stored = None

        def __setddpin__(self, pin):
            self.stored = pin

        def __getddpin__(self):
            return self.stored

    obj = Custom()
    pin = Pin.override(obj, service="x")
    assert obj.stored is pin and Pin.get_from(obj) is pin

    class Slotted:
        __slots__ = ()

    Pin("x").onto(Slotted())  # cannot hold a pin: logged, not raised
    Pin("x").onto(1)
