"""Remote control from the cloud side: command records, asynchronous and cached commands.

:class:`CommandRecords` keeps every command's life in ``commands.sqlite3`` (created, queued,
sent, replied, failed, expired, timed out); :class:`CommandService` (started by the lab with
the IoT hub services) records and sends commands, instant or cached (EnOS ``pendingTtl``:
queued while the device is offline, delivered in order one at a time when it comes online, at
most :data:`MAX_CACHED` per device, expired ones marked), and hands out a
:class:`CommandHandle` for each. The facade is :class:`~enos_lab.lab.Lab`'s
``invoke_service``, ``set_measurepoints``, ``get_measurepoints``, ``commands`` and
``command``.
"""

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
    "MAX_CACHED",
    "CommandHandle",
    "CommandRecord",
    "CommandRecords",
    "CommandService",
    "CommandStatus",
]
