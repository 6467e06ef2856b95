"""enos_lab: a local, notebook-first laboratory for IoT device provisioning.

Modelled on the Envision EnOS IoT Hub: an in-process MQTT 3.1.1/5.0 hub, a device registry,
thing models, a time-series store and tutorials. Start with :class:`Lab`; the README has a tour.
"""

from __future__ import annotations

from .lab import Lab

__version__ = "0.1.0"

__all__ = ["Lab", "__version__"]
