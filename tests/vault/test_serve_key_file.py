"""``enos-lab serve --key-file``: the lab key kept outside the data directory, and a data
directory that the key does not open refused with status 1 and the reason."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from enos_lab.vault import KEY_FILE


def _serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "enos_lab", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_serve_keeps_the_key_where_it_is_told_and_refuses_another(tmp_path: Path) -> None:
    data, key_file = tmp_path / "data", tmp_path / "keys" / "lab.key"
    proc = _serve("--data-dir", str(data), "--key-file", str(key_file))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert re.fullmatch(r"enos-lab hub listening on mqtt://127\.0\.0\.1:\d+\n", line), line
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert key_file.exists() and not (data / KEY_FILE).exists()

    refused = _serve("--data-dir", str(data))  # no key beside the data: the key is elsewhere
    out, err = refused.communicate(timeout=30)
    assert refused.returncode == 1 and "listening" not in out
    assert re.search(r"enos-lab serve: the lab key file .*lab\.key is missing", err), err
    assert not (data / KEY_FILE).exists()
