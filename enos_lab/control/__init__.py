"""Remote control from the cloud side: command records, asynchronous and cached commands.

:class:`CommandRecords` keeps every command's life in ``commands.sqlite3`` (created, queued,
sent, replied, failed, expired, timed out); :class:`CommandService` (started by the lab with
the IoT hub services) records and sends commands, instant or cached (EnOS ``pendingTtl``:
queued while the device is offline, delivered in order one at a time when it comes online, at
most :data:`MAX_CACHED` per device, expired ones marked), and hands out a
:class:`CommandHandle` for each. The facade is :class:`~enos_lab.lab.Lab`'s
``invoke_service``, ``set_measurepoints``, ``get_measurepoints``, ``commands`` and
``command``.

Configuration: :class:`ConfigService` (started with the command service) checks attribute and
tag changes from the cloud against the thing model, keeps them as the device's own reports are
kept, pushes them to an online device (``thing.attribute.set``, a topic of the lab's own: see
:mod:`enos_lab.control._config`) and records every change, from either side, in
:class:`ConfigHistory` (``config.sqlite3``). The facade is ``set_attributes``,
``delete_attributes``, ``set_tags``, ``delete_tags``, ``bulk_set_attributes``,
``bulk_set_tags`` and ``config_history``.
"""

from ._config import ConfigResult, ConfigService, check_change
from ._history import (
    CONFIG_COLUMNS,
    CONFIG_FILE,
    ConfigChange,
    ConfigHistory,
    ConfigKind,
    ConfigSource,
)
from ._records import (
    COMMAND_COLUMNS,
    COMMANDS_FILE,
    CommandRecord,
    CommandRecords,
    CommandStatus,
)
from ._service import MAX_CACHED, CommandHandle, CommandService

__all__ = [
    "COMMANDS_FILE",
    "COMMAND_COLUMNS",
    "CONFIG_COLUMNS",
    "CONFIG_FILE",
    "MAX_CACHED",
    "CommandHandle",
    "CommandRecord",
    "CommandRecords",
    "CommandService",
    "CommandStatus",
    "ConfigChange",
    "ConfigHistory",
    "ConfigKind",
    "ConfigResult",
    "ConfigService",
    "ConfigSource",
    "check_change",
]
