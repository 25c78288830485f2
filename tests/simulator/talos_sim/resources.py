"""COSI resources a node serves, with versions and watchers, encoded the way Talos encodes them."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass

from . import wire

MACHINE_CONFIG = ("config", "MachineConfigs.config.talos.dev")
OS_ROOT = ("secrets", "OSRootSecrets.secrets.talos.dev")
KUBERNETES_ROOT = ("secrets", "KubernetesRootSecrets.secrets.talos.dev")
MEMBERS = ("cluster", "Members.cluster.talos.dev")
SERVICES = ("runtime", "Services.v1alpha1.talos.dev")

# Types this simulator knows; anything else is refused like a type without a definition.
KNOWN_TYPES = {rtype: namespace for namespace, rtype in (MACHINE_CONFIG, OS_ROOT, KUBERNETES_ROOT, MEMBERS, SERVICES)}
# Sensitive resources need os:admin to be read (Talos resource definitions mark them Sensitive).
SENSITIVE_TYPES = {MACHINE_CONFIG[1], OS_ROOT[1], KUBERNETES_ROOT[1]}

# cosi.resource.EventType
CREATED, UPDATED, DESTROYED = 0, 1, 2

MACHINE_TYPE_ENUM = {"init": 1, "controlplane": 2, "worker": 3}


def _timestamp(seconds: float):
    stamp = wire.message_class("google.protobuf.Timestamp")()
    stamp.seconds = int(seconds)
    stamp.nanos = int((seconds - int(seconds)) * 1e9)
    return stamp


@dataclass(frozen=True)
class Resource:
    namespace: str
    type: str
    id: str
    version: int
    owner: str
    created: float
    updated: float
    spec: bytes

    def message(self):
        metadata = wire.message_class("cosi.resource.Metadata")(
            namespace=self.namespace, type=self.type, id=self.id, version=str(self.version), owner=self.owner,
            phase="running")
        metadata.created.CopyFrom(_timestamp(self.created))
        metadata.updated.CopyFrom(_timestamp(self.updated))
        spec = wire.message_class("cosi.resource.Spec")(proto_spec=self.spec)
        return wire.message_class("cosi.resource.Resource")(metadata=metadata, spec=spec)


def tombstone(namespace: str, rtype: str, rid: str):
    """What a single-resource watch reports for a resource that does not exist."""
    metadata = wire.message_class("cosi.resource.Metadata")(
        namespace=namespace, type=rtype, id=rid, version="undefined", phase="running")
    return wire.message_class("cosi.resource.Resource")(metadata=metadata)


class ResourceStore:
    """One node's resources; runs on the simulator's event loop only."""

    def __init__(self):
        self._items: dict[tuple[str, str, str], Resource] = {}
        self._watchers: dict[tuple[str, str, str | None], set[asyncio.Queue]] = {}

    def put(self, kind: tuple[str, str], rid: str, spec: bytes, owner: str = "") -> None:
        """Create or update; an unchanged spec is no update (controllers write only on change)."""
        namespace, rtype = kind
        key = (namespace, rtype, rid)
        old = self._items.get(key)
        if old is not None and old.spec == spec:
            return
        stamp = time.time()
        new = Resource(namespace, rtype, rid, old.version + 1 if old else 1, owner,
                       old.created if old else stamp, stamp, spec)
        self._items[key] = new
        event = (UPDATED if old else CREATED, new.message(), old.message() if old else None)
        for watch_key in (key, (namespace, rtype, None)):
            for queue in self._watchers.get(watch_key, ()):
                queue.put_nowait(event)

    def get(self, namespace: str, rtype: str, rid: str) -> Resource | None:
        return self._items.get((namespace, rtype, rid))

    def list(self, namespace: str, rtype: str) -> list[Resource]:
        return sorted((res for key, res in self._items.items() if key[:2] == (namespace, rtype)),
                      key=lambda res: res.id)

    def watch(self, namespace: str, rtype: str, rid: str | None) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._watchers.setdefault((namespace, rtype, rid), set()).add(queue)
        return queue

    def unwatch(self, namespace: str, rtype: str, rid: str | None, queue: asyncio.Queue) -> None:
        self._watchers.get((namespace, rtype, rid), set()).discard(queue)


# --- specs --------------------------------------------------------------------------------


def _message(message_name: str, **fields) -> bytes:
    return wire.message_class(message_name)(**fields).SerializeToString()


def machine_config_spec(data: bytes) -> bytes:
    return _message("resource.config.MachineConfigSpec", yaml_marshalled=data)


def os_root_spec(issuing_cert: bytes | None, issuing_key: bytes | None, accepted: tuple[bytes, ...],
                 san_ips: tuple[str, ...], san_dns: tuple[str, ...], token: str) -> bytes:
    """OSRootSpec written in Go struct order (fields 1, 5, 2, 3, 4), as Talos writes it."""
    name = "talos.resource.definitions.secrets.OSRootSpec"
    pem_pair = wire.message_class("common.PEMEncodedCertificateAndKey")
    pem_cert = wire.message_class("common.PEMEncodedCertificate")
    netip = wire.message_class("common.NetIP")
    parts = []
    if issuing_cert is not None:
        parts.append(_message(name, issuing_ca=pem_pair(crt=issuing_cert, key=issuing_key or b"")))
    parts.append(_message(name, accepted_c_as=[pem_cert(crt=pem) for pem in accepted]))
    parts.append(_message(name, cert_sani_ps=[netip(ip=ipaddress.ip_address(ip).packed) for ip in san_ips]))
    parts.append(_message(name, cert_sandns_names=list(san_dns)))
    parts.append(_message(name, token=token))
    return b"".join(parts)


def kubernetes_root_spec(cluster_name: str, issuing_cert: bytes, issuing_key: bytes,
                         accepted: tuple[bytes, ...], service_account_key: bytes | None,
                         service_account_accepted: tuple[bytes, ...] = ()) -> bytes:
    """KubernetesRootSpec: issuing_ca=7, accepted_c_as=15, service_account=8, service_account_accepted_keys=18,
    plus fields a decoder must skip."""
    name = "talos.resource.definitions.secrets.KubernetesRootSpec"
    pem_pair = wire.message_class("common.PEMEncodedCertificateAndKey")
    pem_cert = wire.message_class("common.PEMEncodedCertificate")
    return b"".join([
        _message(name, name=cluster_name),
        wire.field(6, "cluster.local"),  # dns_domain: not in the collection's proto subset
        _message(name, issuing_ca=pem_pair(crt=issuing_cert, key=issuing_key)),
        wire.field(8, _message("common.PEMEncodedKey", key=service_account_key or b"")),  # service_account
        _message(name, accepted_c_as=[pem_cert(crt=pem) for pem in accepted]),
        # service_account_accepted_keys: repeated PEMEncodedKey holding public keys.
        b"".join(wire.field(18, _message("common.PEMEncodedKey", key=pem)) for pem in service_account_accepted),
    ])


def member_spec(node_id: str, addresses: list[str], hostname: str, machine_type: str, talos_tag: str) -> bytes:
    netip = wire.message_class("common.NetIP")
    return _message("talos.resource.definitions.cluster.MemberSpec", node_id=node_id,
                    addresses=[netip(ip=ipaddress.ip_address(address).packed) for address in addresses], hostname=hostname,
                    machine_type=MACHINE_TYPE_ENUM[machine_type], operating_system="Talos (%s)" % talos_tag)


def service_spec(running: bool, healthy: bool) -> bytes:
    # All-false encodes to zero bytes, exactly like Go's proto marshalling.
    return _message("talos.resource.definitions.v1alpha1.ServiceSpec", running=running, healthy=healthy,
                    unknown=False)
