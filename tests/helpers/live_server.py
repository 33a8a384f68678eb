"""A real ComfyUI 0.3.75 server with this pack installed, started for the tests and stopped by its PID.

The server runs from COMFYUI_DIR (default `.cache/comfyui`, prepared by
`tools/install_test_host.sh`) on 127.0.0.1 with a free port. Everything it writes goes to a
temporary work folder:

    <work>/extra_model_paths.yaml   declares custom_nodes, facerestore_models and facedetection
    <work>/custom_nodes/comfyui-restoreformer -> the repository root (a link, nothing copied)
    <work>/facerestore_models/      test models written by the tests
    <work>/input, output, user, temp

The pack is loaded exactly as a user's ComfyUI loads it (through the root `__init__.py`). Start-up
takes 16-35 s on 2 cores, so one server serves the whole test session (`shared_server()`).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from helpers.comfy_host import REPO, comfyui_dir

PACK_FOLDER = "comfyui-restoreformer"
IMPORT_FAILED = "(IMPORT FAILED)"


class ServerError(RuntimeError):
    """The server did not start, or a prompt did not finish."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveComfyUI:
    """One ComfyUI server process. `start()` blocks until `/system_stats` answers; `stop()` ends
    the whole process group (the server and anything it spawned), and is idempotent."""

    def __init__(self, work: Path | None = None, comfy: Path | None = None, startup_timeout: float = 240.0):
        self.comfy = comfy or comfyui_dir()
        self.work = Path(work or tempfile.mkdtemp(prefix="rf-live-comfyui-"))
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None
        self.log_path = self.work / "server.log"
        for name in ("input", "output", "user", "custom_nodes", "facerestore_models", "facedetection", "upscale_models"):
            (self.work / name).mkdir(parents=True, exist_ok=True)
        # A fresh user folder opens the Templates dialog on the first page load; a user who has
        # seen it has this setting, so the browser test meets the canvas directly.
        settings = self.work / "user" / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))

    # -- paths ---------------------------------------------------------------------------------
    @property
    def input_dir(self) -> Path:
        return self.work / "input"

    @property
    def output_dir(self) -> Path:
        return self.work / "output"

    @property
    def models_dir(self) -> Path:
        return self.work / "facerestore_models"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- life cycle ----------------------------------------------------------------------------
    def _write_config(self) -> Path:
        link = self.work / "custom_nodes" / PACK_FOLDER
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        config = self.work / "extra_model_paths.yaml"
        # JSON is valid YAML; it saves depending on a YAML writer here.
        config.write_text(
            json.dumps(
                {
                    "itest": {
                        "base_path": str(self.work),
                        "custom_nodes": "custom_nodes",
                        "facerestore_models": "facerestore_models",
                        "facedetection": "facedetection",
                        "upscale_models": "upscale_models",
                    }
                },
                indent=2,
            )
        )
        return config

    def start(self) -> LiveComfyUI:
        config = self._write_config()
        cmd = [
            sys.executable, "main.py", "--cpu",
            "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--disable-api-nodes",
            "--extra-model-paths-config", str(config),
            "--input-directory", str(self.work / "input"),
            "--output-directory", str(self.work / "output"),
            "--user-directory", str(self.work / "user"),
            "--temp-directory", str(self.work),  # becomes <work>/temp, wiped at exit
            "--database-url", f"sqlite:///{self.work / 'user' / 'comfyui.db'}",
        ]  # fmt: skip
        # RESTOREFORMER_COMPILE_ON_CPU: the compile node compiles on this CPU server too (by default a
        # CPU restores uncompiled, being faster so), so test_live_compile runs inductor for real.
        env = dict(
            os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", DO_NOT_TRACK="1", RESTOREFORMER_COMPILE_ON_CPU="1"
        )
        with open(self.log_path, "wb") as log:
            # A new session makes the server the leader of its own process group, so stop() can end
            # it and its children without touching anything else.
            self.proc = subprocess.Popen(
                cmd, cwd=self.comfy, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"ComfyUI exited with code {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if requests.get(self.url + "/system_stats", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            raise ServerError(f"ComfyUI did not answer within {self.startup_timeout:.0f} s:\n{self.log()[-4000:]}")
        failed = [line for line in self.log().splitlines() if IMPORT_FAILED in line]
        if failed:
            raise ServerError("a custom node failed to import:\n" + "\n".join(failed) + "\n" + self.log()[-6000:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- HTTP ----------------------------------------------------------------------------------
    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def object_info(self) -> dict:
        return self.get("/object_info", timeout=120).json()

    def submit(self, prompt: dict) -> str:
        """POST an API-format prompt; returns its id. Raises with the server's per-node errors."""
        r = self.post("/prompt", json={"prompt": prompt, "client_id": self.client_id})
        if r.status_code != 200:
            raise ServerError(f"/prompt answered {r.status_code}: {r.text}")
        return r.json()["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Poll /history until the prompt finished (either way); returns its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ServerError(f"ComfyUI died while running {prompt_id}:\n{self.log()[-4000:]}")
            entry = self.get(f"/history/{prompt_id}").json().get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.25)
        raise ServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log()[-4000:]}")

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        return self.wait(self.submit(prompt), timeout)

    def output_images(self, entry: dict, node_id: str) -> list[Path]:
        """Files written by one output node of a finished prompt."""
        images = entry.get("outputs", {}).get(str(node_id), {}).get("images", [])
        roots = {"output": self.output_dir, "temp": self.work / "temp", "input": self.input_dir}
        return [roots[i["type"]] / i.get("subfolder", "") / i["filename"] for i in images]


class Events:
    """The server's websocket messages to this test client, collected in a background thread:
    `messages` holds (monotonic time, type, data) for 'executing', 'progress', 'execution_*'...
    Prompts must be submitted with the server's client_id (LiveComfyUI.submit does)."""

    def __init__(self, server: LiveComfyUI):
        import asyncio
        import threading

        self.messages: list[tuple[float, str, dict]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._url = f"ws://127.0.0.1:{server.port}/ws?clientId={server.client_id}"
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._listen(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise ServerError("the websocket did not connect")

    async def _listen(self) -> None:
        import asyncio

        import aiohttp

        self._task = asyncio.current_task()
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(self._url) as ws:
                self._ready.set()
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        self.messages.append((time.monotonic(), data["type"], data.get("data", {})))
        except asyncio.CancelledError:
            pass

    def of(self, prompt_id: str, kind: str) -> list[tuple[float, dict]]:
        return [(t, d) for t, k, d in list(self.messages) if k == kind and d.get("prompt_id") == prompt_id]

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)


def history_error(entry: dict) -> dict | None:
    """The `execution_error` message of a failed prompt (exception_message, node_type, ...)."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data
    return None


def history_messages(entry: dict) -> list[str]:
    return [kind for kind, _ in entry.get("status", {}).get("messages", [])]


_SHARED: LiveComfyUI | None = None


def shared_server() -> LiveComfyUI:
    """The session's one server, started on first use; `stop_shared_server()` (and atexit) end it."""
    global _SHARED
    if _SHARED is None or not _SHARED.running:
        _SHARED = LiveComfyUI().start()
    return _SHARED


def stop_shared_server() -> None:
    global _SHARED
    if _SHARED is not None:
        _SHARED.stop()
        _SHARED = None
