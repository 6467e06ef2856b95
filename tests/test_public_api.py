"""What ``import enos_lab`` gives by name: sorted, documented, and enough for a notebook."""

from __future__ import annotations

import dataclasses
import inspect
import types

import enos_lab


def test_all_is_sorted_and_every_name_resolves_with_a_docstring_of_its_own() -> None:
    names = enos_lab.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    module_doc = enos_lab.__doc__ or ""
    for name in names:
        obj = getattr(enos_lab, name)  # resolves
        assert f"``{name}``" in module_doc, f"{name} is not listed in the package docstring"
        if isinstance(obj, type):
            doc = vars(obj).get("__doc__") or ""
            if dataclasses.is_dataclass(obj):
                assert not doc.startswith(f"{name}("), f"{name} has only the generated docstring"
            assert doc.strip(), f"{name} has no docstring of its own"
        elif isinstance(obj, types.ModuleType | types.FunctionType):
            assert (inspect.getdoc(obj) or "").strip(), f"{name} has no docstring"


def test_a_notebook_needs_no_other_import_for_the_common_names() -> None:
    from enos_lab.clock import SimulatedClock
    from enos_lab.enos import Reply, TopicKind
    from enos_lab.errors import EnosLabError, NotFound
    from enos_lab.hub import HubConfig
    from enos_lab.iothub import IotHubConfig
    from enos_lab.store import StoreConfig

    assert enos_lab.SimulatedClock is SimulatedClock
    assert enos_lab.TopicKind is TopicKind and enos_lab.Reply is Reply
    assert enos_lab.TopicKind.SERVICE_INVOKE in TopicKind
    assert (enos_lab.HubConfig, enos_lab.IotHubConfig, enos_lab.StoreConfig) == (
        HubConfig,
        IotHubConfig,
        StoreConfig,
    )
    assert enos_lab.EnosLabError is EnosLabError and enos_lab.NotFound is NotFound
    # every exception class of the tree is an EnosLabError and reachable through errors
    for name in enos_lab.errors.__all__:
        assert issubclass(getattr(enos_lab.errors, name), enos_lab.EnosLabError)
    # the families (the root's direct subclasses) are exported by name, as the same classes
    families = {cls.__name__ for cls in enos_lab.EnosLabError.__subclasses__()}
    assert families <= set(enos_lab.__all__)
    for name in set(enos_lab.__all__) & set(enos_lab.errors.__all__):
        assert getattr(enos_lab, name) is getattr(enos_lab.errors, name)


def test_the_device_sdk_s_main_names() -> None:
    from enos_lab import device

    for name in ("Backoff", "ConnectionMode", "Device", "DeviceClient"):
        assert getattr(enos_lab, name) is getattr(device, name)
    for name in ("LoginRefused", "RequestFailed", "RequestTimeout", "NotConnected"):
        assert issubclass(getattr(enos_lab, name), enos_lab.DeviceError)
    assert issubclass(enos_lab.LoginRefused, enos_lab.AuthenticationError)
    assert issubclass(enos_lab.RequestTimeout, TimeoutError)


def test_the_simulation_s_main_names() -> None:
    from enos_lab import lab, sim

    for name in ("Fleet", "Link", "profile_for"):
        assert getattr(enos_lab, name) is getattr(sim, name)
    assert inspect.signature(enos_lab.Lab.simulate).return_annotation in ("LabFleet", lab.LabFleet)
