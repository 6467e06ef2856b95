"""``enos-lab serve``: prints its URL, serves MQTT, stops cleanly on SIGTERM and SIGINT.
``enos-lab tutorials``: finds or copies the notebooks and opens them in JupyterLab, as root too."""

from __future__ import annotations

import gc
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CONNECT_311 = bytes.fromhex("101400044d5154540402003c00086c61622d74657374")


def _start(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "enos_lab", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.fullmatch(r"enos-lab hub listening on mqtt://127\.0\.0\.1:(\d+)\n", line)
    assert match, f"unexpected first line {line!r}"
    return proc, int(match.group(1))


def _connack(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(CONNECT_311)
        return sock.recv(4)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_anonymous_accepts_clients_and_stops_on_signal(stop_signal: int) -> None:
    proc, port = _start("--anonymous")
    try:
        assert _connack(port) == bytes.fromhex("20020000")
    finally:
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "enos-lab hub stopped" in out
    assert "WARNING" in err and "without authentication" in err


def test_serve_without_anonymous_refuses_unregistered_clients() -> None:
    proc, port = _start()
    try:
        assert proc.stdout is not None
        notice = proc.stdout.readline()
        assert "only registered devices can connect" in notice
        assert "register_device" in notice
        assert _connack(port) == bytes.fromhex("20020005")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_serving_process_freezes_startup_objects_and_collects_less_often() -> None:
    from enos_lab import cli

    before = gc.get_threshold()
    try:
        cli._tune_gc()
        assert gc.get_threshold() == cli.GC_THRESHOLDS
        assert cli.GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# -- enos-lab tutorials ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=(\w+)")


def _printed_command(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    from enos_lab import cli

    assert cli.main(["tutorials", "--print-command", *args]) == 0
    return shlex.split(capsys.readouterr().out)


@pytest.mark.parametrize("as_root", [True, False])
def test_tutorials_opens_the_checkouts_notebooks_and_allows_root_only_as_root(
    as_root: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from enos_lab import cli

    monkeypatch.setattr(cli, "_running_as_root", lambda: as_root)
    command = _printed_command(capsys)
    expected = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={ROOT / 'notebooks'}"]
    assert command == expected + (["--allow-root"] if as_root else [])


def test_tutorials_passes_jupyterlab_options_on(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from enos_lab import cli

    monkeypatch.setattr(cli, "_running_as_root", lambda: True)
    command = _printed_command(
        capsys, "--dir", str(tmp_path), "--no-browser", "--ServerApp.port=0", "--allow-root"
    )
    assert command[3:] == [
        f"--ServerApp.root_dir={tmp_path}",
        "--no-browser",
        "--ServerApp.port=0",
        "--allow-root",  # once
    ]
    assert not list(tmp_path.iterdir())  # printing copies nothing
    with pytest.raises(SystemExit):
        cli.main(["serve", "--no-browser"])  # other commands take no foreign options


def test_tutorials_copies_what_the_folder_lacks_and_keeps_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from enos_lab import cli

    ran: list[list[str]] = []
    monkeypatch.setattr(cli, "_exec", ran.append)
    target = tmp_path / "mine"
    assert cli.main(["tutorials", "--dir", str(target), "--no-browser"]) == 0
    shipped = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(p.name for p in target.iterdir()) == shipped
    assert f"copied {len(shipped)} tutorial notebook(s) to {target}" in capsys.readouterr().out
    assert ran == [cli.jupyterlab_command(target, ["--no-browser"])]

    edited = target / shipped[0]
    edited.write_text('{"edited": true}')
    (target / shipped[1]).unlink()
    assert cli.main(["tutorials", "--dir", str(target)]) == 0
    assert edited.read_text() == '{"edited": true}'  # never overwritten
    assert (target / shipped[1]).read_bytes() == (ROOT / "notebooks" / shipped[1]).read_bytes()
    assert "copied 1 tutorial notebook(s)" in capsys.readouterr().out


def test_tutorials_without_jupyterlab_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from enos_lab import cli

    monkeypatch.setattr(cli, "_exec", lambda command: pytest.fail("must not run"))
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(
        cli.importlib.util, "find_spec", lambda name: None if name == "jupyterlab" else real(name)
    )
    assert cli.main(["tutorials", "--dir", str(tmp_path)]) == 1
    assert "enos_lab[notebooks]" in capsys.readouterr().err


def test_an_installed_wheel_copies_its_tutorials_to_the_home_folder(tmp_path: Path) -> None:
    # The wheel carries notebooks/ inside the package; lay a package out the same way (no
    # source checkout beside it) and run the command in a fresh interpreter.
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    target = wheel["targets"]["wheel"]["force-include"]["notebooks"]
    assert target == "enos_lab/_notebooks"
    site = tmp_path / "site"
    shutil.copytree(ROOT / "enos_lab", site / "enos_lab")
    shutil.copytree(ROOT / "notebooks", site / target)
    home = tmp_path / "home"
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r}); from enos_lab import cli; "
        "cli._exec = lambda command: print(*command); sys.exit(cli.main(['tutorials']))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "HOME": str(home)},
    )
    folder = home / "enos-lab-tutorials"
    shipped = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(p.name for p in folder.iterdir()) == shipped
    assert f"--ServerApp.root_dir={folder}" in result.stdout.split()


@pytest.mark.slow
def test_tutorials_starts_jupyterlab_on_the_folder(tmp_path: Path) -> None:
    """The real thing, without a browser: JupyterLab starts (as root too, if the suite runs as
    root), serves the copied tutorials on 127.0.0.1, and stops on SIGTERM."""
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "enos_lab", "tutorials", "--dir", str(tmp_path / "tutorials")]
    options = ["--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0"]
    proc = subprocess.Popen(
        [*command, *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    log: list[str] = []
    try:
        deadline = time.monotonic() + 60
        match = None
        while match is None:
            try:
                log.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail("JupyterLab printed no URL within 60 s:\n" + "".join(log))
            match = URL.search(log[-1])
        port, token = match.groups()
        # With port 0 JupyterLab picks a free port, prints its URL, then listens once its loop
        # runs: the first requests may be refused.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{port}/api/contents?token={token}"
        while True:
            try:
                with opener.open(url, timeout=10) as response:
                    names = {item["name"] for item in json.load(response)["content"]}
                break
            except urllib.error.URLError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert "00_quickstart.ipynb" in names
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # the PID is JupyterLab's: the command exec'd it
        proc.wait(timeout=30)
        reader.join(10)  # the pipe ends with the process
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == 0, "".join(log)
