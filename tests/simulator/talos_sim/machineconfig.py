"""Machine configurations of simulated nodes: generated in Talos' shapes, validated like Talos.

Generation follows the documents real clusters carry (TALOS-FACTS.md §6 and the stability
test data of siderolabs/talos): up to v1.13 the Kubernetes CA sits in `cluster.ca`; from
v1.14 it sits in a `KubeAPIServerCAConfig` document with raw PEM. Parsing reads what a
client applies with PyYAML (safe) and applies the validation rules of
pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go that concern CAs, plus the
immediate-apply rule of Runtime.CanApplyImmediate.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import functools
import re
import secrets as _random
import string
from dataclasses import dataclass, field

import yaml

from . import pki, yamlgen

# libyaml's parser when PyYAML has it (the same YAML 1.1 loading as the pure-Python one): the pure-Python parser
# spent ~2 ms of the simulator's one event loop per config (a phase over hundreds of nodes queued behind it).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

KUBE_CA_KIND = "KubeAPIServerCAConfig"
AGGREGATOR_CA_KIND = "KubeAggregatorCAConfig"
SERVICE_ACCOUNT_KIND = "KubeServiceAccountConfig"
# v1.14+ document kinds Talos refuses on workers (container/validate.go).
CONTROLPLANE_ONLY_KINDS = (AGGREGATOR_CA_KIND, SERVICE_ACCOUNT_KIND)
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+].*)?$")


class ConfigError(ValueError):
    """The config is refused at apply time (gRPC InvalidArgument)."""


@dataclass(frozen=True, order=True)
class TalosVersion:
    major: int
    minor: int
    patch: int
    tag: str = field(compare=False)

    @classmethod
    def parse(cls, tag: str) -> "TalosVersion":
        match = _VERSION_RE.match(tag)
        if not match:
            raise ValueError("not a Talos version tag: %r (expected e.g. v1.13.4)" % tag)
        major, minor, patch = (int(part or 0) for part in match.groups())
        return cls(major, minor, patch, tag if tag.startswith("v") else "v" + tag)

    @property
    def kube_ca_document(self) -> bool:
        """v1.14+ keeps the Kubernetes CA in a KubeAPIServerCAConfig document."""
        return (self.major, self.minor) >= (1, 14)

    @property
    def reboot_mode_supported(self) -> bool:
        """ApplyConfiguration mode REBOOT (0) reboots up to v1.13; v1.14+ answers Unimplemented."""
        return (self.major, self.minor) < (1, 14)


def _token(random_part: int = 16) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "%s.%s" % ("".join(_random.choice(alphabet) for _position in range(6)),
                      "".join(_random.choice(alphabet) for _position in range(random_part)))


@dataclass(frozen=True)
class ClusterSecrets:
    """The secrets bundle of a cluster, as `talosctl gen secrets` makes it (§6)."""

    name: str
    cluster_id: str
    cluster_secret: str
    bootstrap_token: str
    secretbox_secret: str
    trustd_token: str
    os_ca: pki.CertKey
    k8s_ca: pki.CertKey
    etcd_ca: pki.CertKey
    aggregator_ca: pki.CertKey
    service_account_key_pem: bytes

    @classmethod
    def generate(cls, name: str, ca_validity=None) -> "ClusterSecrets":
        """ca_validity: {"os"|"kubernetes"|"etcd"|"aggregator": timedelta} for CAs shorter-lived than talosctl's 10 years."""
        validity = dict(ca_validity or {})
        unknown = sorted(set(validity) - {"os", "kubernetes", "etcd", "aggregator"})
        if unknown:
            raise ValueError("ca_validity names unknown CAs %s: use os, kubernetes, etcd, aggregator" % unknown)
        lifetime = {kind: validity.get(kind, pki.CA_VALIDITY) for kind in ("os", "kubernetes", "etcd", "aggregator")}
        return cls(
            name=name,
            cluster_id=base64.urlsafe_b64encode(_random.token_bytes(32)).decode(),
            cluster_secret=base64.b64encode(_random.token_bytes(32)).decode(),
            bootstrap_token=_token(),
            secretbox_secret=base64.b64encode(_random.token_bytes(32)).decode(),
            trustd_token=_token(),
            os_ca=pki.new_ca("ed25519", organization="talos", validity=lifetime["os"]),
            k8s_ca=pki.new_ca("ecdsa", organization="kubernetes", validity=lifetime["kubernetes"]),
            etcd_ca=pki.new_ca("ecdsa", organization="etcd", validity=lifetime["etcd"]),
            aggregator_ca=pki.new_ca("ecdsa", common_name="front-proxy", validity=lifetime["aggregator"]),
            service_account_key_pem=pki.new_kubernetes_ca().key_pem,
        )

    def secrets_yaml(self) -> bytes:
        """secrets.yaml with the lower-case Go field names of talosctl gen secrets."""
        def pair(cert_key):
            return {"crt": pki.b64(cert_key.cert_pem), "key": pki.b64(cert_key.key_pem)}
        return yamlgen.dump({
            "cluster": {"id": self.cluster_id, "secret": self.cluster_secret},
            "secrets": {"bootstraptoken": self.bootstrap_token, "secretboxencryptionsecret": self.secretbox_secret},
            "trustdinfo": {"token": self.trustd_token},
            "certs": {
                "etcd": pair(self.etcd_ca),
                "k8s": pair(self.k8s_ca),
                "k8saggregator": pair(self.aggregator_ca),
                "k8sserviceaccount": {"key": pki.b64(self.service_account_key_pem)},
                "os": pair(self.os_ca),
            },
        }).encode()


def _pair_b64(cert_key: pki.CertKey, with_key: bool) -> dict:
    return {"crt": pki.b64(cert_key.cert_pem), "key": pki.b64(cert_key.key_pem) if with_key else ""}


def generate(secrets: ClusterSecrets, machine_type: str, version: TalosVersion, endpoint: str,
             kubernetes_version: str, vip: str | None = None) -> bytes:
    """The machine config `talosctl gen config` would write for this node type and version, with a shared virtual
    IP declared as the operator would add it (a Layer2VIPConfig document from v1.12, machine.network before)."""
    if version.kube_ca_document:
        documents = _documents_v1_14(secrets, machine_type, version, endpoint, kubernetes_version)
    else:
        documents = _documents_legacy(secrets, machine_type, version, endpoint, kubernetes_version)
    if vip and version.minor >= 12:
        documents.append({"apiVersion": "v1alpha1", "kind": "Layer2VIPConfig", "name": vip, "link": "eth0"})
    elif vip:
        machine = next(document for document in documents if "machine" in document)["machine"]
        machine["network"] = {"interfaces": [{"interface": "eth0", "dhcp": True, "vip": {"ip": vip}}]}
    return yamlgen.dump_all(documents).encode()


def _documents_legacy(secrets, machine_type, version, endpoint, kubernetes_version):
    controlplane = machine_type != "worker"
    features = {"diskQuotaSupport": True, "kubePrism": {"enabled": True, "port": 7445},
                "hostDNS": {"enabled": True, "forwardKubeDNSToHost": True}}
    if version.minor < 13:
        # The v1.13 contract stopped writing the RBAC and EKU-check feature flags.
        features = {"rbac": True, "stableHostname": True, "apidCheckExtKeyUsage": True, **features}
    machine = {
        "type": machine_type,
        "token": secrets.trustd_token,
        "ca": _pair_b64(secrets.os_ca, controlplane),
        "certSANs": [],
        "kubelet": {"image": "ghcr.io/siderolabs/kubelet:%s" % kubernetes_version,
                    "defaultRuntimeSeccompProfileEnabled": True, "disableManifestsDirectory": True},
        "network": {},
        "install": {"disk": "/dev/sda", "image": "ghcr.io/siderolabs/installer:%s" % version.tag, "wipe": False},
        "features": features,
    }
    if controlplane:
        machine["nodeLabels"] = {"node.kubernetes.io/exclude-from-external-load-balancers": ""}
    cluster = {
        "id": secrets.cluster_id,
        "secret": secrets.cluster_secret,
        "controlPlane": {"endpoint": "https://%s:6443" % endpoint},
        "clusterName": secrets.name,
        "network": {"dnsDomain": "cluster.local", "podSubnets": ["10.244.0.0/16"],
                    "serviceSubnets": ["10.96.0.0/12"]},
        "token": secrets.bootstrap_token,
    }
    if controlplane:
        cluster["secretboxEncryptionSecret"] = secrets.secretbox_secret
    cluster["ca"] = _pair_b64(secrets.k8s_ca, controlplane)
    if controlplane:
        cluster.update({
            "aggregatorCA": _pair_b64(secrets.aggregator_ca, True),
            "serviceAccount": {"key": pki.b64(secrets.service_account_key_pem)},
            "apiServer": {
                "image": "registry.k8s.io/kube-apiserver:%s" % kubernetes_version,
                "certSANs": [endpoint],
                "admissionControl": [{"name": "PodSecurity", "configuration": {
                    "apiVersion": "pod-security.admission.config.k8s.io/v1alpha1",
                    "defaults": {"enforce": "baseline", "enforce-version": "latest"},
                    "exemptions": {"namespaces": ["kube-system"], "runtimeClasses": [], "usernames": []},
                    "kind": "PodSecurityConfiguration"}}],
                "auditPolicy": {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "Metadata"}]},
            },
            "controllerManager": {"image": "registry.k8s.io/kube-controller-manager:%s" % kubernetes_version},
            "proxy": {"image": "registry.k8s.io/kube-proxy:%s" % kubernetes_version},
            "scheduler": {"image": "registry.k8s.io/kube-scheduler:%s" % kubernetes_version},
        })
    cluster["discovery"] = {"enabled": True, "registries": {"kubernetes": {"disabled": True}, "service": {}}}
    if controlplane:
        cluster["etcd"] = {"ca": _pair_b64(secrets.etcd_ca, True)}
    documents = [{"version": "v1alpha1", "debug": False, "persist": True, "machine": machine, "cluster": cluster}]
    if version.minor >= 12:
        documents.append({"apiVersion": "v1alpha1", "kind": "HostnameConfig", "auto": "stable"})
    return documents


def _documents_v1_14(secrets, machine_type, version, endpoint, kubernetes_version):
    controlplane = machine_type != "worker"
    machine = {
        "type": machine_type,
        "token": secrets.trustd_token,
        "ca": _pair_b64(secrets.os_ca, controlplane),
        "certSANs": [],
        "install": {"disk": "/dev/sda", "image": "ghcr.io/siderolabs/installer:%s" % version.tag, "wipe": False},
        "features": {"diskQuotaSupport": True},
    }
    cluster = {"token": secrets.bootstrap_token}
    if controlplane:
        cluster["etcd"] = {"ca": _pair_b64(secrets.etcd_ca, True)}
    documents = [
        {"version": "v1alpha1", "debug": False, "persist": True, "machine": machine, "cluster": cluster},
        {"apiVersion": "v1alpha1", "kind": "DiscoveryServiceConfig", "name": "default",
         "endpoint": "https://discovery.talos.dev/"},
        {"apiVersion": "v1alpha1", "kind": "DiscoveryIdentityConfig", "clusterID": secrets.cluster_id,
         "clusterSecret": secrets.cluster_secret},
        {"apiVersion": "v1alpha1", "kind": "HostnameConfig", "auto": "stable"},
        {"apiVersion": "v1alpha1", "kind": "KubeClusterConfig", "clusterName": secrets.name,
         "endpoint": "https://%s:6443" % endpoint},
    ]
    node = {"apiVersion": "v1alpha1", "kind": "KubeNodeConfig", "nodeIP": {}}
    if controlplane:
        node["labels"] = {"node-role.kubernetes.io/control-plane": "",
                          "node.kubernetes.io/exclude-from-external-load-balancers": ""}
        node["taints"] = {"node-role.kubernetes.io/control-plane": "NoSchedule"}
    documents += [
        node,
        {"apiVersion": "v1alpha1", "kind": "KubeletConfig",
         "image": "ghcr.io/siderolabs/kubelet:%s" % kubernetes_version, "config": {},
         "defaultRuntimeSeccompProfileEnabled": True},
        {"apiVersion": "v1alpha1", "kind": "KubeNetworkConfig", "dnsDomain": "cluster.local",
         "podSubnets": ["10.244.0.0/16"], "serviceSubnets": ["10.96.0.0/12"]},
    ]
    if controlplane:
        documents.append({"apiVersion": "v1alpha1", "kind": KUBE_CA_KIND, "issuingCA": {
            "cert": secrets.k8s_ca.cert_pem.decode(), "key": secrets.k8s_ca.key_pem.decode()}})
    else:
        documents.append({"apiVersion": "v1alpha1", "kind": KUBE_CA_KIND,
                          "acceptedCAs": [secrets.k8s_ca.cert_pem.decode()]})
    documents.append({"apiVersion": "v1alpha1", "kind": "KubePrismConfig", "port": 7445})
    if controlplane:
        documents += [
            {"apiVersion": "v1alpha1", "kind": "KubeAggregatorCAConfig", "issuingCA": {
                "cert": secrets.aggregator_ca.cert_pem.decode(), "key": secrets.aggregator_ca.key_pem.decode()}},
            {"apiVersion": "v1alpha1", "kind": "KubeServiceAccountConfig", "issuer": {
                "privateKey": secrets.service_account_key_pem.decode(),
                "issuerURL": "https://%s:6443" % endpoint}},
            {"apiVersion": "v1alpha1", "kind": "KubeAPIServerConfig",
             "image": "registry.k8s.io/kube-apiserver:%s" % kubernetes_version},
            {"apiVersion": "v1alpha1", "kind": "KubeControllerManagerConfig",
             "image": "registry.k8s.io/kube-controller-manager:%s" % kubernetes_version},
            {"apiVersion": "v1alpha1", "kind": "KubeSchedulerConfig",
             "image": "registry.k8s.io/kube-scheduler:%s" % kubernetes_version, "config": {}},
        ]
    return documents


# --- parsing and validation -------------------------------------------------------------


@dataclass(frozen=True)
class CATrust:
    """The CA material one node derives from its config (what OSRoot/KubernetesRoot hold)."""

    issuing_cert_pem: bytes | None   # machine.ca.crt / cluster.ca.crt / issuingCA.cert
    issuing_key_pem: bytes | None    # control planes only
    accepted_pems: tuple[bytes, ...]  # the *accepted* list only, without the issuing cert

    @property
    def pool_pems(self) -> tuple[bytes, ...]:
        """Trust pool: accepted CAs followed by the issuing CA certificate (§4)."""
        return self.accepted_pems + ((self.issuing_cert_pem,) if self.issuing_cert_pem else ())

    # Cached: configs are immutable and these run on every readiness or trust decision.
    @functools.cached_property
    def pool(self) -> tuple:
        return tuple(pki.load_certificate(pem) for pem in self.pool_pems)

    @functools.cached_property
    def pool_fingerprints(self) -> frozenset:
        return frozenset(pki.fingerprint(cert) for cert in self.pool)

    @functools.cached_property
    def _issuing(self) -> pki.CertKey | None:
        if not self.issuing_cert_pem or not self.issuing_key_pem:
            return None
        cert = pki.load_certificate(self.issuing_cert_pem)
        key = pki.load_private_key(self.issuing_key_pem)
        if not pki.key_matches(cert, key):
            raise pki.PEMError("CA key does not match the CA certificate")
        return pki.CertKey(cert, key, self.issuing_cert_pem, self.issuing_key_pem)

    def issuing(self) -> pki.CertKey | None:
        """The issuing CA as a usable key pair, or None; raises PEMError on a bad key."""
        return self._issuing

    @functools.cached_property
    def identity(self) -> tuple:
        """What changes here is what makes controllers regenerate certificates."""
        issuing = self.issuing_cert_pem and pki.fingerprint(pki.load_certificate(self.issuing_cert_pem))
        return issuing, bool(self.issuing_key_pem), tuple(pki.fingerprint(cert) for cert in self.pool)


@dataclass(frozen=True)
class ServiceAccountTrust:
    """What kube-apiserver gets from KubernetesRoot for service-account tokens (TALOS-FACTS §8)."""

    signing_key_pem: bytes | None          # issuer.privateKey / cluster.serviceAccount.key
    accepted_public_pems: tuple[bytes, ...]  # accepted.publicKeys (v1.14+ document only)
    issuer_url: str
    accepted_issuers: tuple[str, ...] = ()
    accepted_audiences: tuple[str, ...] = ()

    @functools.cached_property
    def signing_key(self):
        return pki.load_private_key(self.signing_key_pem) if self.signing_key_pem else None

    @functools.cached_property
    def verification_keys(self) -> tuple:
        """--service-account-key-file: the signing key's public key first, then the accepted ones."""
        keys = [self.signing_key.public_key()] if self.signing_key is not None else []
        keys += [pki.load_public_key(pem) for pem in self.accepted_public_pems]
        return tuple(keys)

    @property
    def issuers(self) -> tuple[str, ...]:
        return (self.issuer_url,) + self.accepted_issuers

    @property
    def audiences(self) -> tuple[str, ...]:
        """--api-audiences: the issuer URL and the accepted audiences."""
        return (self.issuer_url,) + self.accepted_audiences


def _string_list(value, path: str, errors: list) -> tuple[str, ...]:
    if value in (None, []):
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        errors.append("%s: expected a list of strings" % path)
        return ()
    return tuple(value)


def _public_pem(value, path: str, errors: list) -> bytes | None:
    if not isinstance(value, str) or not value:
        errors.append("%s: expected a PEM public key" % path)
        return None
    try:
        pki.load_public_key(value.encode())
    except pki.PEMError as exc:
        errors.append("%s: %s" % (path, exc))
        return None
    return value.encode()


def _service_account(documents: list, cluster: dict, controlplane: bool, errors: list) -> ServiceAccountTrust | None:
    """KubeServiceAccountConfig (v1.14+) or the legacy cluster.serviceAccount.key, validated as Talos does."""
    endpoint = (cluster.get("controlPlane") or {}).get("endpoint") if isinstance(cluster.get("controlPlane"), dict) else None
    legacy = cluster.get("serviceAccount")
    legacy_key = None
    if legacy is not None:
        section = _strict_keys(legacy, {"key"}, ".cluster.serviceAccount", errors)
        legacy_key = _b64_pem(section.get("key"), ".cluster.serviceAccount.key", errors, certificate=False)
    if not documents:
        if legacy_key and controlplane:
            return ServiceAccountTrust(legacy_key, (), str(endpoint or ""))
        return None
    if len(documents) > 1:
        errors.append("only one %s document is allowed" % SERVICE_ACCOUNT_KIND)
        return None
    if not controlplane:
        return None  # parse() refuses it with the other control-plane-only kinds, in one message
    if legacy is not None:
        errors.append("service account key is already set in v1alpha1 config (.cluster.serviceAccount), please remove "
                      "it and use the new %s document instead" % SERVICE_ACCOUNT_KIND)
    document = _strict_keys(documents[0], {"apiVersion", "kind", "issuer", "accepted"}, SERVICE_ACCOUNT_KIND, errors)
    issuer = _strict_keys(document.get("issuer"), {"privateKey", "issuerURL"}, SERVICE_ACCOUNT_KIND + ".issuer", errors)
    accepted = _strict_keys(document.get("accepted"), {"publicKeys", "issuers", "audiences"},
                            SERVICE_ACCOUNT_KIND + ".accepted", errors)
    key = _raw_pem(issuer.get("privateKey"), SERVICE_ACCOUNT_KIND + ".issuer.privateKey", errors, certificate=False)
    if key is None:
        errors.append("%s.issuer.privateKey is required" % SERVICE_ACCOUNT_KIND)
    public_keys = accepted.get("publicKeys") or []
    if not isinstance(public_keys, list):
        errors.append("%s.accepted.publicKeys: expected a list of PEM strings" % SERVICE_ACCOUNT_KIND)
        public_keys = []
    pems = tuple(pem for index, item in enumerate(public_keys)
                 if (pem := _public_pem(item, "%s.accepted.publicKeys[%d]" % (SERVICE_ACCOUNT_KIND, index), errors)))
    return ServiceAccountTrust(
        key, pems, str(issuer.get("issuerURL") or endpoint or ""),
        _string_list(accepted.get("issuers"), SERVICE_ACCOUNT_KIND + ".accepted.issuers", errors),
        _string_list(accepted.get("audiences"), SERVICE_ACCOUNT_KIND + ".accepted.audiences", errors))


@dataclass(frozen=True)
class ParsedConfig:
    data: bytes
    documents: list
    v1alpha1: dict
    machine_type: str
    token: str
    cert_sans: tuple[str, ...]
    os: CATrust
    kubernetes: CATrust
    # The aggregator (front-proxy) CA: KubeAggregatorCAConfig or cluster.aggregatorCA; None when the config has none.
    aggregator: CATrust | None = None
    service_account: ServiceAccountTrust | None = None

    @property
    def controlplane(self) -> bool:
        return self.machine_type in ("controlplane", "init")


def _multierror(errors: list[str]) -> str:
    # hashicorp/go-multierror formatting, which Talos validation errors carry.
    if len(errors) == 1:
        return "1 error occurred:\n\t* %s\n\n" % errors[0]
    return "%d errors occurred:\n%s\n\n" % (len(errors), "\n".join("\t* %s" % error for error in errors))


def _strict_keys(value, allowed: set, path: str, errors: list):
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append("%s: expected a mapping" % path)
        return {}
    unknown = sorted(set(value) - allowed)
    if unknown:
        errors.append("unknown keys found during decoding: %s: %s" % (path, ", ".join(map(str, unknown))))
    return value


def _b64_pem(value, path: str, errors: list, *, certificate: bool) -> bytes | None:
    """A v1alpha1 `crt`/`key`: base64 of PEM text. Empty means unset."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        errors.append("%s: expected a base64 string" % path)
        return None
    try:
        pem = pki.b64decode_strict(value)
    except (binascii.Error, ValueError):
        errors.append("%s: illegal base64 data" % path)
        return None
    return _check_pem(pem, path, errors, certificate=certificate)


def _raw_pem(value, path: str, errors: list, *, certificate: bool) -> bytes | None:
    """A KubeAPIServerCAConfig `cert`/`key`/accepted entry: raw PEM text."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        errors.append("%s: expected a PEM string" % path)
        return None
    return _check_pem(value.encode(), path, errors, certificate=certificate)


def _check_pem(pem: bytes, path: str, errors: list, *, certificate: bool) -> bytes | None:
    try:
        if certificate:
            pki.load_certificate(pem)
        else:
            pki.load_private_key(pem)
    except pki.PEMError as exc:
        errors.append("%s: %s" % (path, exc))
        return None
    return pem


def _v1alpha1_pair(section: dict, name: str, path: str, errors: list):
    pair = _strict_keys(section.get(name), {"crt", "key"}, path, errors)
    if name not in section or section.get(name) is None:
        return None, None, False
    crt = _b64_pem(pair.get("crt"), path + ".crt", errors, certificate=True)
    key = _b64_pem(pair.get("key"), path + ".key", errors, certificate=False)
    return crt, key, True


def _v1alpha1_accepted(section: dict, path: str, errors: list) -> tuple[bytes, ...]:
    items = section.get("acceptedCAs") or []
    if not isinstance(items, list):
        errors.append("%s: expected a list" % path)
        return ()
    pems = []
    for index, item in enumerate(items):
        entry = _strict_keys(item, {"crt"}, "%s[%d]" % (path, index), errors)
        pem = _b64_pem(entry.get("crt"), "%s[%d].crt" % (path, index), errors, certificate=True)
        if pem:
            pems.append(pem)
    return tuple(pems)


def parse(data: bytes, version: TalosVersion) -> ParsedConfig:
    """Parse and validate a config as the node running `version` would; ConfigError if refused."""
    try:
        documents = [document for document in yaml.load_all(data, Loader=SAFE_LOADER) if document is not None]
    except yaml.YAMLError as exc:
        raise ConfigError("failed to parse config: %s" % exc) from exc
    errors: list[str] = []
    v1alpha1_docs, kube_ca_docs, aggregator_docs, service_account_docs, controlplane_only = [], [], [], [], []
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            raise ConfigError("failed to parse config: document %d is not a mapping" % index)
        kind = document.get("kind")
        if kind is None:
            if document.get("version") != "v1alpha1":
                raise ConfigError("failed to parse config: document %d: missing kind" % index)
            v1alpha1_docs.append(document)
        elif kind == KUBE_CA_KIND:
            if not version.kube_ca_document:
                # Older Talos does not know this document kind at all.
                raise ConfigError("failed to parse config: unknown document kind \"%s\" (Talos %s)"
                                  % (kind, version.tag))
            kube_ca_docs.append(document)
        elif kind == AGGREGATOR_CA_KIND:
            if not version.kube_ca_document:
                raise ConfigError("failed to parse config: unknown document kind \"%s\" (Talos %s)"
                                  % (kind, version.tag))
            aggregator_docs.append(document)
        elif kind == SERVICE_ACCOUNT_KIND:
            if not version.kube_ca_document:
                raise ConfigError("failed to parse config: unknown document kind \"%s\" (Talos %s)"
                                  % (kind, version.tag))
            service_account_docs.append(document)
        if kind in CONTROLPLANE_ONLY_KINDS:
            controlplane_only.append(kind)
    if len(aggregator_docs) > 1:
        raise ConfigError("failed to parse config: duplicate document: %s" % AGGREGATOR_CA_KIND)
    if len(v1alpha1_docs) != 1 or len(kube_ca_docs) > 1:
        raise ConfigError("failed to parse config: expected one v1alpha1 document and at most one %s, found %d and %d"
                          % (KUBE_CA_KIND, len(v1alpha1_docs), len(kube_ca_docs)))
    v1 = v1alpha1_docs[0]
    machine = v1.get("machine")
    if not isinstance(machine, dict):
        raise ConfigError(_multierror(["machine instructions are required"]))
    cluster = v1.get("cluster") or {}
    if not isinstance(cluster, dict):
        raise ConfigError(_multierror(["cluster instructions are required"]))

    machine_type = machine.get("type")
    if machine_type not in ("init", "controlplane", "worker"):
        raise ConfigError(_multierror(["unknown machine type %r" % machine_type]))
    controlplane = machine_type != "worker"

    os_crt, os_key, os_ca_set = _v1alpha1_pair(machine, "ca", ".machine.ca", errors)
    os_accepted = _v1alpha1_accepted(machine, ".machine.acceptedCAs", errors)
    k8s_crt, k8s_key, k8s_ca_set = _v1alpha1_pair(cluster, "ca", ".cluster.ca", errors)
    k8s_accepted = _v1alpha1_accepted(cluster, ".cluster.acceptedCAs", errors)

    if kube_ca_docs:
        document = _strict_keys(kube_ca_docs[0], {"apiVersion", "kind", "issuingCA", "acceptedCAs"},
                                KUBE_CA_KIND, errors)
        if k8s_ca_set or cluster.get("acceptedCAs"):
            errors.append("conflict: the Kubernetes API CA is set both in .cluster.ca/.cluster.acceptedCAs and in "
                          "the %s document" % KUBE_CA_KIND)
        issuing = _strict_keys(document.get("issuingCA"), {"cert", "key"}, KUBE_CA_KIND + ".issuingCA", errors)
        k8s_crt = _raw_pem(issuing.get("cert"), KUBE_CA_KIND + ".issuingCA.cert", errors, certificate=True)
        k8s_key = _raw_pem(issuing.get("key"), KUBE_CA_KIND + ".issuingCA.key", errors, certificate=False)
        accepted = document.get("acceptedCAs") or []
        if not isinstance(accepted, list):
            errors.append(KUBE_CA_KIND + ".acceptedCAs: expected a list of PEM strings")
            accepted = []
        k8s_accepted = tuple(pem for index, item in enumerate(accepted)
                             if (pem := _raw_pem(item, "%s.acceptedCAs[%d]" % (KUBE_CA_KIND, index), errors,
                                                 certificate=True)))

    aggregator = _aggregator_trust(cluster, aggregator_docs, errors)
    if not controlplane and controlplane_only:
        errors.append("the following document kinds are only allowed on control plane machines: [%s]"
                      % ", ".join(sorted(set(controlplane_only))))

    # Rules of v1alpha1_validation.go, with its messages.
    if not os_ca_set and not os_accepted:
        errors.append("issuing CA or some accepted CAs are required (.machine.ca, machine.acceptedCAs)")
    if controlplane:
        if not os_ca_set:
            errors.append("issuing CA is required (.machine.ca)")
        elif not os_key:
            errors.append("issuing CA key is required for controlplane nodes (.machine.ca.key)")
        elif not os_crt:
            errors.append("issuing CA certificate is required (.machine.ca.crt)")
        if not (k8s_crt and k8s_key):
            errors.append("issuing Kubernetes API CA certificate and key are required on control plane nodes "
                          "(.cluster.ca or %s.issuingCA)" % KUBE_CA_KIND)
    else:
        if os_ca_set and os_key:
            errors.append("issuing Talos API CA key is not allowed on non-controlplane nodes (.machine.ca)")
        if os_ca_set and not os_crt and not os_accepted:
            errors.append("trusted CA certificates are required on non-controlplane nodes "
                          "(.machine.ca.crt, .machine.acceptedCAs)")
        if k8s_key:
            errors.append("issuing Kubernetes API CA key is not allowed on non-controlplane nodes (%s)"
                          % (KUBE_CA_KIND + ".issuingCA" if kube_ca_docs else ".cluster.ca"))
        if cluster.get("etcd"):
            errors.append("etcd config is only allowed on control plane machines")
    service_account = _service_account(service_account_docs, cluster, controlplane, errors)
    if errors:
        raise ConfigError(_multierror(errors))

    sans = machine.get("certSANs") or []
    return ParsedConfig(
        data=data,
        documents=documents,
        v1alpha1=v1,
        machine_type=machine_type,
        token=str(machine.get("token") or ""),
        cert_sans=tuple(str(san) for san in sans) if isinstance(sans, list) else (),
        os=CATrust(os_crt, os_key if controlplane else None, os_accepted),
        kubernetes=CATrust(k8s_crt, k8s_key if controlplane else None, k8s_accepted),
        aggregator=aggregator if controlplane else None,
        service_account=service_account,
    )


def _aggregator_trust(cluster: dict, documents: list, errors: list) -> CATrust | None:
    """The aggregator CA from the KubeAggregatorCAConfig document or the legacy cluster.aggregatorCA field."""
    crt, key, legacy_set = _v1alpha1_pair(cluster, "aggregatorCA", ".cluster.aggregatorCA", errors)
    if not documents:
        return CATrust(crt, key, ()) if legacy_set and crt else None
    if legacy_set:
        errors.append("aggregator CA is already set in v1alpha1 config (.cluster.aggregatorCA), please remove it and use "
                      "the new %s document instead" % AGGREGATOR_CA_KIND)
    document = _strict_keys(documents[0], {"apiVersion", "kind", "issuingCA", "acceptedCAs"}, AGGREGATOR_CA_KIND, errors)
    issuing = _strict_keys(document.get("issuingCA"), {"cert", "key"}, AGGREGATOR_CA_KIND + ".issuingCA", errors)
    crt = _raw_pem(issuing.get("cert"), AGGREGATOR_CA_KIND + ".issuingCA.cert", errors, certificate=True)
    key = _raw_pem(issuing.get("key"), AGGREGATOR_CA_KIND + ".issuingCA.key", errors, certificate=False)
    if not (crt and key):
        errors.append("issuing aggregator CA certificate and key are required (%s.issuingCA)" % AGGREGATOR_CA_KIND)
    accepted = document.get("acceptedCAs") or []
    if not isinstance(accepted, list):
        errors.append(AGGREGATOR_CA_KIND + ".acceptedCAs: expected a list of PEM strings")
        accepted = []
    pems = tuple(pem for index, item in enumerate(accepted)
                 if (pem := _raw_pem(item, "%s.acceptedCAs[%d]" % (AGGREGATOR_CA_KIND, index), errors, certificate=True)))
    return CATrust(crt, key, pems)


# Keys Runtime.CanApplyImmediate lets change without a reboot (v1.14 development line).
_IMMEDIATE_TOP = ("debug", "cluster")
_IMMEDIATE_MACHINE = ("ca", "acceptedCAs", "time", "certSANs", "install", "network", "sysfs", "sysctls",
                      "logging", "controlplane", "kubelet", "kernel", "registries", "pods", "seccompProfiles",
                      "nodeAnnotations", "nodeLabels", "nodeTaints")
_IMMEDIATE_FEATURES = ("kubernetesTalosAPIAccess", "kubePrism", "hostDNS", "imageCache", "nodeAddressSortAlgorithm")


def _without_immediate(v1alpha1: dict, reference: dict) -> dict:
    """`v1alpha1` with every immediately-applicable field replaced by the reference's value."""
    result = copy.deepcopy(v1alpha1)

    def carry(target: dict, source: dict, key: str):
        if key in source:
            target[key] = copy.deepcopy(source[key])
        else:
            target.pop(key, None)

    for key in _IMMEDIATE_TOP:
        carry(result, reference, key)
    machine, ref_machine = result.get("machine"), reference.get("machine")
    if isinstance(machine, dict) and isinstance(ref_machine, dict):
        for key in _IMMEDIATE_MACHINE:
            carry(machine, ref_machine, key)
        features, ref_features = machine.get("features"), ref_machine.get("features")
        if isinstance(features, dict) and isinstance(ref_features, dict):
            for key in _IMMEDIATE_FEATURES:
                carry(features, ref_features, key)
    return result


def immediate_error(current: ParsedConfig, new: ParsedConfig) -> str | None:
    """Why `new` needs a reboot, or None when it can be applied in place.

    Only the v1alpha1 document matters; other documents always apply immediately.
    """
    candidate = _without_immediate(new.v1alpha1, current.v1alpha1)
    if candidate == current.v1alpha1:
        return None
    diff = "".join(difflib.unified_diff(yamlgen.dump(current.v1alpha1).splitlines(True),
                                        yamlgen.dump(candidate).splitlines(True), "a", "b"))
    return "this config change can't be applied in immediate mode\ndiff:\n%s" % diff


def config_diff(current: bytes, new: bytes) -> str:
    """The text diff a dry run reports."""
    lines = list(difflib.unified_diff(current.decode(errors="replace").splitlines(True),
                                      new.decode(errors="replace").splitlines(True), "a", "b"))
    return "".join(lines) if lines else "No changes."
