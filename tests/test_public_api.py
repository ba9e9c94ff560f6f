"""The public surface is a contract: pinned here, and nothing else leaks out."""

from __future__ import annotations

import cascade_notify

CONTRACT = {
    "Notifier",
    "SyncNotifier",
    "Recipient",
    "Message",
    "Delivery",
    "DeliveryStatus",
    "Attempt",
    "Receipt",
    "CascadeError",
    "PolicyError",
}


def test_contract_names_are_exported():
    """Every name the issue promises is importable from the package root."""
    assert set(cascade_notify.__all__) >= CONTRACT


def test_all_is_sorted_and_complete():
    """__all__ is sorted, and each name in it exists."""
    assert cascade_notify.__all__ == sorted(cascade_notify.__all__)
    for name in cascade_notify.__all__:
        assert getattr(cascade_notify, name) is not None


def test_no_private_names_leak():
    """Public attributes of the package are exactly __all__ plus modules and metadata."""
    import types

    public = {
        n
        for n, v in vars(cascade_notify).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public == set(cascade_notify.__all__)


def test_every_error_is_a_cascade_error():
    """One root: every exception class the package exports derives from CascadeError."""
    for name in cascade_notify.__all__:
        obj = getattr(cascade_notify, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, cascade_notify.CascadeError), name
