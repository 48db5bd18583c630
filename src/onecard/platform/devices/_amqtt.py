"""Emergency in-process broker (amqtt, MQTT 3.1.1) for machines without Mosquitto.

Not installed by default: ``pip install amqtt``. It checks no passwords and no ACL, so it is
only for a demo on a laptop; :class:`~onecard.platform.devices.broker.EmbeddedBroker` warns.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class AmqttBroker:
    """amqtt on its own event-loop thread."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._broker: Any = None

    def start(self) -> None:
        """Start listening (raises RuntimeError when amqtt is not installed)."""
        try:
            from amqtt.broker import Broker  # type: ignore[import-not-found]
        except ImportError:
            raise RuntimeError(
                "neither mosquitto nor amqtt is installed: apt-get install mosquitto"
            ) from None
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # allow_anonymous false keeps persistent sessions (see docs/toolchain notes)
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False}
            },
        }
        threading.Thread(target=self._loop.run_forever, daemon=True, name="amqtt").start()

        async def _start() -> Any:
            broker = Broker(config)
            await broker.start()
            return broker

        self._broker = asyncio.run_coroutine_threadsafe(_start(), self._loop).result(10)

    def stop(self) -> None:
        """Shut the broker down and stop its loop."""
        if self._broker is not None:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
