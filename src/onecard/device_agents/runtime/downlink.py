"""What an agent does with lists, configuration bundles and commands from the platform, and
the receipts it sends back."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from onecard.device_agents.protocol.blacklist import SnapshotAssembler, SortedKeySet
from onecard.device_agents.protocol.bundles import verify_bundle
from onecard.device_agents.protocol.codec import decode, encode
from onecard.device_agents.protocol.codes import CommandName, ProtocolError
from onecard.device_agents.protocol.messages import (
    AnyMessage,
    Command,
    CommandReceipt,
    ConfigBundle,
    ConfigReceipt,
    ListDelta,
    ListReceipt,
    ListSnapshotChunk,
)
from onecard.device_agents.protocol.topics import Topic
from onecard.device_agents.runtime.configfiles import ConfigFiles
from onecard.device_agents.runtime.offline import OfflinePolicy

if TYPE_CHECKING:
    from onecard.device_agents.runtime.agent import Agent

log = logging.getLogger(__name__)
ListStatus = Literal["applied", "gap", "error"]
ConfigStatus = Literal["applied", "rejected", "rolled_back"]
CommandStatus = Literal["ok", "failed", "unsupported", "expired"]


class Downlink:
    """Lists, config and commands of one agent."""

    def __init__(self, agent: Agent, config: ConfigFiles, public_key: Ed25519PublicKey | None):
        self.agent = agent
        self.config = config
        self.public_key = public_key
        self.policy = OfflinePolicy()
        self._assemblers: dict[str, SnapshotAssembler] = {}
        current = config.current()
        self.config_version = 0
        if current is not None and public_key is not None:
            try:
                self._use(current, verify_bundle(current, public_key, device=current.device))
            except ProtocolError as err:
                log.error("%s: config on disk refused: %s", agent.settings.device_id, err)

    def handle(self, message: AnyMessage) -> None:
        """Dispatch a ``down/lists``, ``down/config`` or ``down/cmd`` message."""
        if isinstance(message, ListDelta):
            self._delta(message)
        elif isinstance(message, ListSnapshotChunk):
            self._chunk(message)
        elif isinstance(message, ConfigBundle):
            self._bundle(message)
        elif isinstance(message, Command):
            self._command(message)

    # lists --------------------------------------------------------------------------------

    def _delta(self, delta: ListDelta) -> None:
        agent = self.agent
        held = agent.store.list_versions().get(delta.list, 0)
        if delta.to <= held:
            self._list_receipt(delta.list, held, "applied")
        elif delta.from_ > held:  # the changes between ``held`` and ``from`` are missing
            agent.counters.list_gaps += 1
            self._list_receipt(delta.list, held, "gap", f"need from {held}")
        else:
            # ``from`` may be older than ``held`` (the platform computed the delta before our
            # receipt of the previous one arrived): a delta carries the final state of every
            # key changed after ``from``, so applied over any later version it still gives
            # ``to``. Asking again with a gap receipt would only cost a round trip.
            agent.store.apply_delta(delta.list, delta.to, delta.add, delta.remove)
            agent.lists.setdefault(delta.list, SortedKeySet()).apply(delta.add, delta.remove)
            agent.counters.lists_applied += 1
            self._list_receipt(delta.list, delta.to, "applied")

    def _chunk(self, chunk: ListSnapshotChunk) -> None:
        agent = self.agent
        try:
            keys = self._assemblers.setdefault(chunk.list, SnapshotAssembler()).add(chunk)
        except ProtocolError as err:
            held = agent.store.list_versions().get(chunk.list, 0)
            self._list_receipt(chunk.list, held, "error", err.reason.value)
            return
        if keys is None:
            return
        held = agent.store.list_versions().get(chunk.list, 0)
        if chunk.version > held:
            agent.store.apply_delta(chunk.list, chunk.version, keys, (), replace=True)
            agent.lists[chunk.list] = SortedKeySet.from_sorted(keys)
            agent.counters.lists_applied += 1
            held = chunk.version
        self._list_receipt(chunk.list, held, "applied")

    def _list_receipt(
        self, name: str, version: int, status: ListStatus, detail: str | None = None
    ) -> None:
        receipt = ListReceipt(list=name, version=version, status=status, detail=detail)
        self.agent.send(Topic.RECEIPT, receipt)

    # config -------------------------------------------------------------------------------

    def _use(self, bundle: ConfigBundle, body: dict[str, object]) -> None:
        self.config_version = bundle.version
        self.policy = OfflinePolicy.from_body(body)
        if self.agent.personality is not None:
            self.agent.personality.configure(body)
        self.agent.handlers.config_applied(body)

    def _bundle(self, bundle: ConfigBundle) -> None:
        agent = self.agent
        if self.public_key is None:
            self._config_receipt(bundle.version, "rejected", "no_public_key")
            return
        try:
            body = verify_bundle(bundle, self.public_key, device=agent.settings.device_id)
        except ProtocolError as err:
            agent.counters.configs_rejected += 1
            log.warning("%s: config v%d refused: %s", agent.settings.device_id, bundle.version, err)
            self._config_receipt(bundle.version, "rejected", err.reason.value)
            return
        if bundle.version < self.config_version:
            self._config_receipt(bundle.version, "rejected", "stale_version")
            return
        if bundle.version > self.config_version:
            self.config.apply(bundle)
            self._use(bundle, body)
            agent.counters.configs_applied += 1
        self._config_receipt(bundle.version, "applied")

    def _config_receipt(
        self, version: int, status: ConfigStatus, detail: str | None = None
    ) -> None:
        receipt = ConfigReceipt(version=version, status=status, detail=detail)
        self.agent.send(Topic.RECEIPT, receipt)

    def rollback(self) -> CommandStatus:
        """Go back to the previous bundle; the receipt status."""
        before = self.config.rollback()
        if before is None or self.public_key is None:
            return "failed"
        self._use(before, verify_bundle(before, self.public_key, device=before.device))
        self._config_receipt(before.version, "rolled_back")
        return "ok"

    # commands -----------------------------------------------------------------------------

    def _command(self, cmd: Command) -> None:
        agent = self.agent
        if cmd.name is CommandName.ERROR:
            agent.counters.errors_received += 1
            log.warning("%s: platform refused a message: %s", agent.settings.device_id, cmd.args)
            return
        earlier = agent.store.command_receipt(cmd.cmd_id)
        if earlier is not None:
            agent.send(Topic.RECEIPT, decode(Topic.RECEIPT, earlier))
            return
        agent.counters.commands += 1
        corrected = agent.clock.now_ms() + (agent.offset_ms or 0)
        if cmd.expires_at is not None and corrected > cmd.expires_at:
            status: CommandStatus = "expired"
        else:
            status = self._run(cmd)
        receipt = CommandReceipt(cmd_id=cmd.cmd_id, status=status)
        agent.store.save_command(cmd.cmd_id, encode(receipt).decode())
        agent.send(Topic.RECEIPT, receipt)

    def _run(self, cmd: Command) -> CommandStatus:
        agent = self.agent
        try:
            if cmd.name is CommandName.OPEN_DOOR:
                ms = cmd.args.get("ms", 3000)
                agent.handlers.open_door(ms if isinstance(ms, int) else 3000)
            elif cmd.name is CommandName.SYNC_TIME:
                agent.sync_time()
            elif cmd.name is CommandName.RESEND_RECORDS:
                agent.resend_all()
            elif cmd.name is CommandName.REBOOT:
                agent.handlers.reboot()
            elif cmd.name is CommandName.ROLLBACK_CONFIG:
                return self.rollback()
            else:
                return "unsupported"
        except Exception:  # a handler's failure is the command's result, not the agent's end
            log.exception("%s: command %s failed", agent.settings.device_id, cmd.name)
            return "failed"
        return "ok"
