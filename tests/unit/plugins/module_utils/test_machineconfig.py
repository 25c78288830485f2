"""Machine config CA fields: reading every shape Talos writes, and surgical edits that keep every other byte."""

import base64
import datetime
import re

import pytest
import yaml as pyyaml  # a second, independent parser to locate the owned lines in the checks below
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from ansible_collections.talosops.pki.plugins.module_utils import _machineconfig
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import (
    KIND_KUBERNETES,
    KIND_TALOS,
    CAFields,
    MachineConfig,
)

from talos_reference import reference_path  # pylint: disable=import-error

REFERENCE_CONFIGS = [
    "machineconfig-v1.7/base-controlplane.yaml", "machineconfig-v1.7/base-worker.yaml",
    "machineconfig-v1.13/base-controlplane.yaml", "machineconfig-v1.13/base-worker.yaml",
    "machineconfig-v1.15/base-controlplane.yaml", "machineconfig-v1.15/base-worker.yaml",
    "machineconfig-commented/controlplane.yaml", "machineconfig-commented/worker.yaml",
]


# --- certificates in the shapes Talos generates -------------------------------------------------

def make_ca(organization, edwards=False):
    """(certificate PEM, key PEM) of a CA; Ed25519 keys under Talos's `ED25519 PRIVATE KEY` label."""
    key = ed25519.Ed25519PrivateKey.generate() if edwards else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, None if edwards else hashes.SHA256()))
    crt_pem = cert.public_bytes(serialization.Encoding.PEM)
    if edwards:
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        key_pem = key_pem.replace(b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN ED25519 PRIVATE KEY-----")
        key_pem = key_pem.replace(b"-----END PRIVATE KEY-----", b"-----END ED25519 PRIVATE KEY-----")
    else:
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    return crt_pem, key_pem


@pytest.fixture(scope="module", name="pki")
def pki_fixture():
    return {
        "talos_old": make_ca("talos", edwards=True), "talos_new": make_ca("talos", edwards=True),
        "k8s_old": make_ca("kubernetes"), "k8s_new": make_ca("kubernetes"),
        "etcd": make_ca("etcd"), "aggregator": make_ca("front-proxy"),
    }


def b64(pem):
    return base64.b64encode(pem).decode("ascii")


def der(pem):
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def ders(pems):
    return tuple(der(pem) for pem in pems)


def indented(pem, spaces):
    return "\n".join(" " * spaces + line for line in pem.decode("ascii").strip().split("\n"))


# --- generated configs in the real shapes --------------------------------------------------------

def v1alpha1_config(pki, machine_type="controlplane", extra_documents=""):
    """A v1.7-v1.13 style config: both CAs in the v1alpha1 document, base64 PEM, workers with `key: ""`."""
    worker = machine_type == "worker"
    talos_crt, talos_key = pki["talos_old"]
    k8s_crt, k8s_key = pki["k8s_old"]
    return (
        "version: v1alpha1\n"
        "debug: false\n"
        "persist: true\n"
        "machine:\n"
        "    type: %s\n"
        "    token: d8cwfa.eyvpi0xwxyarbfid\n"
        "    ca:\n"
        "        crt: %s\n"
        "        key: %s\n"
        "    certSANs: []\n"
        "    kubelet:\n"
        "        image: ghcr.io/siderolabs/kubelet:v1.30.0\n"
        "    files:\n"
        "        - content: |\n"
        "            [plugins]\n"
        "          permissions: 0o644\n"
        "          path: /var/cri/conf.d/extra.toml\n"
        "          op: create\n"
        "    features:\n"
        "        rbac: true\n"
        "cluster:\n"
        "    id: 0raF93qnkMvF-FZNuvyGozXNdLiT2FOWSlyBaW4PR-w=\n"
        "    controlPlane:\n"
        "        endpoint: https://10.5.0.2:6443\n"
        "    network:\n"
        "        podSubnets:\n"
        "            - 10.244.0.0/16\n"
        "    token: inn7ol.u4ehnti8qyls9ymo\n"
        "    ca:\n"
        "        crt: %s\n"
        "        key: %s\n"
        "    discovery:\n"
        "        enabled: true\n"
        % (machine_type, b64(talos_crt), '""' if worker else b64(talos_key), b64(k8s_crt), '""' if worker else b64(k8s_key))
    ) + extra_documents


def commented_config(pki, machine_type="controlplane"):
    """An older talosctl config: comments everywhere, commented-out examples, `0o666`, blank lines with spaces."""
    worker = machine_type == "worker"
    talos_crt, talos_key = pki["talos_old"]
    k8s_crt, k8s_key = pki["k8s_old"]
    return (
        "version: v1alpha1 # Indicates the schema used to decode the contents.\n"
        "debug: false # Enable verbose logging to the console.\n"
        "# Provides machine specific configuration options.\n"
        "machine:\n"
        "    type: %s # Defines the role of the machine within the cluster.\n"
        "    token: 2z19nz.e8oeemr4l3caw64b # The `token` is used by a machine to join the PKI of the cluster.\n"
        "    # The root certificate authority of the PKI.\n"
        "    ca:\n"
        "        crt: %s\n"
        "        key: %s\n"
        "    # Extra certificate subject alternative names for the machine's certificate.\n"
        "    certSANs: []\n"
        "    #   # Uncomment this to enable SANs.\n"
        "    #   - 10.0.0.10\n"
        "\n"
        "    # # The root certificate authorities accepted in addition to the issuing one.\n"
        "    # acceptedCAs:\n"
        "    #     - crt: TFMwdExTMUNSVWRKVGlCRFJWSlVTVVpKUTBGVVJTMHRMUzB0Q2sxSlNVSklla05DTUhGLi4u\n"
        "    \n"
        "    # Used to provide additional options to the kubelet.\n"
        "    kubelet:\n"
        "        image: ghcr.io/talos-systems/kubelet:v1.23.0\n"
        "        nodeIP:\n"
        "            validSubnets:\n"
        "                - 10.0.0.0/8\n"
        "                - '!10.0.0.3/32'\n"
        "    files:\n"
        "        - content: '...'\n"
        "          permissions: 0o666 # The file's permissions in octal.\n"
        "          path: /tmp/file.txt\n"
        "          op: append\n"
        "    sysctls:\n"
        "        net.ipv4.ip_forward: \"1\"\n"
        "        kernel.sysrq: on\n"
        "# Provides cluster specific configuration options.\n"
        "cluster:\n"
        "    # Provides control plane specific configuration options.\n"
        "    controlPlane:\n"
        "        endpoint: https://1.2.3.4 # Endpoint is the canonical controlplane endpoint.\n"
        "    token: 9qbh68.dc9ya8gx9tornbbc # The bootstrap token.\n"
        "    aescbcEncryptionSecret: \"\" # The key used for the encryption of secret data at rest.\n"
        "    #   # Decryption secret example (do not use in production!).\n"
        "    #   z01mye6j16bspJYtTB/5SFX8j7Ph4JXxM2Xuu4vsBPM=\n"
        "\n"
        "    # The base64 encoded root certificate authority used by Kubernetes.\n"
        "    ca:\n"
        "        crt: %s\n"
        "        key: %s\n"
        "    # Configures cluster member discovery.\n"
        "    discovery:\n"
        "        enabled: true # Enable the cluster membership discovery feature.\n"
        "    \n"
        "    # # AggregatorCA example.\n"
        "    # aggregatorCA:\n"
        "    #     crt: TFMwdExTMUNSVWRKVGlCRFJWSlVTVVpKUTBGVVJTMHRMUzB0Q2sxSlNVSklla05DTUhGLi4u\n"
        % (machine_type, b64(talos_crt), '""' if worker else b64(talos_key), b64(k8s_crt), '""' if worker else b64(k8s_key))
    )


def v115_config(pki, machine_type="controlplane"):
    """The v1.14+ contract: the Kubernetes CA in a KubeAPIServerCAConfig document with raw PEM.

    Control planes: issuingCA.cert/key; workers: only acceptedCAs (a list of PEM strings).
    """
    worker = machine_type == "worker"
    talos_crt, talos_key = pki["talos_old"]
    k8s_crt, k8s_key = pki["k8s_old"]
    if worker:
        kube_ca = "acceptedCAs:\n    - |\n%s\n" % indented(k8s_crt, 6)
    else:
        kube_ca = "issuingCA:\n    cert: |\n%s\n    key: |\n%s\n" % (indented(k8s_crt, 8), indented(k8s_key, 8))
    return (
        "version: v1alpha1\n"
        "debug: false\n"
        "persist: true\n"
        "machine:\n"
        "    type: %s\n"
        "    token: d8cwfa.eyvpi0xwxyarbfid\n"
        "    ca:\n"
        "        crt: %s\n"
        "        key: %s\n"
        "    certSANs: []\n"
        "cluster:\n"
        "    token: inn7ol.u4ehnti8qyls9ymo\n"
        "---\n"
        "apiVersion: v1alpha1\n"
        "kind: HostnameConfig\n"
        "auto: stable\n"
        "---\n"
        "apiVersion: v1alpha1\n"
        "kind: KubeNodeConfig\n"
        "labels:\n"
        "    node.kubernetes.io/exclude-from-external-load-balancers: \"\"\n"
        "---\n"
        "apiVersion: v1alpha1\n"
        "kind: KubeAPIServerCAConfig\n"
        "%s"
        "---\n"
        "apiVersion: v1alpha1\n"
        "kind: KubePrismConfig\n"
        "port: 7445\n"
        % (machine_type, b64(talos_crt), '""' if worker else b64(talos_key), kube_ca)
    )


SHAPES = {
    "v1alpha1": v1alpha1_config,
    "commented": commented_config,
    "v1.15": v115_config,
}


# --- the independent "nothing else changed" check -------------------------------------------------

_OWNED_V1ALPHA1 = (("machine", "ca"), ("machine", "acceptedCAs"), ("cluster", "ca"), ("cluster", "acceptedCAs"))
_OWNED_KUBE_CA = (("issuingCA",), ("acceptedCAs",))


def _key_node(node, path):
    key_node = None
    for part in path:
        if not isinstance(node, pyyaml.MappingNode):
            return None
        matches = [(key, value) for key, value in node.value if key.value == part]
        if not matches:
            return None
        key_node, node = matches[0]
    return key_node


def outside_owned_lines(text):
    """Every line that is not part of an owned entry, with its line ending, in order.

    Owned entries are found with PyYAML (not the parser the code under test uses): an entry runs
    from its key's line over the following lines indented deeper than the key, minus trailing
    blank and comment lines, which belong to what follows.
    """
    lines = text.splitlines(keepends=True)
    owned = set()
    for document in pyyaml.compose_all(text):
        if not isinstance(document, pyyaml.MappingNode):
            continue
        kind = _key_node(document, ("kind",))
        if kind is None:
            paths = _OWNED_V1ALPHA1
        elif [value for key, value in document.value if key.value == "kind"][0].value == "KubeAPIServerCAConfig":
            paths = _OWNED_KUBE_CA
        else:
            continue
        for path in paths:
            key_node = _key_node(document, path)
            if key_node is None:
                continue
            first = last = key_node.start_mark.line
            for number in range(first + 1, len(lines)):
                stripped = lines[number].strip()
                depth = len(lines[number]) - len(lines[number].lstrip(" "))
                if stripped and depth <= key_node.start_mark.column:
                    break
                if stripped and not stripped.startswith("#"):
                    last = number
            owned.update(range(first, last + 1))
    return [line for number, line in enumerate(lines) if number not in owned]


def check_rotation_edits(original, pki, machine_type):
    """Set new talos and kubernetes CAs on `original` and check (a)-(d); returns the edited text."""
    config = MachineConfig.parse(original, "test config")
    assert config.machine_type == machine_type
    worker = machine_type == "worker"
    before = {kind: config.get_ca(kind) for kind in (KIND_TALOS, KIND_KUBERNETES)}
    talos_crt, talos_key = pki["talos_new"]
    k8s_crt, k8s_key = pki["k8s_new"]
    wanted = {KIND_TALOS: CAFields(talos_crt, None if worker else talos_key, (before[KIND_TALOS].issuing_crt,))}
    if before[KIND_KUBERNETES].issuing_crt is None:
        # v1.14+ workers carry the Kubernetes CA as accepted CAs only: keep that shape.
        wanted[KIND_KUBERNETES] = CAFields(None, None, (k8s_crt,) + before[KIND_KUBERNETES].accepted)
    else:
        wanted[KIND_KUBERNETES] = CAFields(k8s_crt, None if worker else k8s_key, (before[KIND_KUBERNETES].issuing_crt,))
    for kind, fields in wanted.items():
        assert config.set_ca(kind, *fields) is True
    edited = config.to_bytes()
    # (a) the fields read back as set, from a fresh parse
    reread = MachineConfig.parse(edited, "edited config")
    for kind, fields in wanted.items():
        got = reread.get_ca(kind)
        assert (der(got.issuing_crt) if got.issuing_crt else None) == (der(fields.issuing_crt) if fields.issuing_crt else None)
        assert got.issuing_key == fields.issuing_key
        assert ders(got.accepted) == ders(fields.accepted)
    # (b) every line outside the owned entries is byte-identical
    assert outside_owned_lines(edited.decode("utf-8")) == outside_owned_lines(original.decode("utf-8"))
    # (d) the same state again is a no-op
    for kind, fields in wanted.items():
        assert config.set_ca(kind, *fields) is False
    assert config.to_bytes() == edited
    # (c) the original values restore the original bytes
    for kind in (KIND_TALOS, KIND_KUBERNETES):
        assert config.set_ca(kind, *before[kind]) is True
    assert config.to_bytes() == original
    return edited


# --- tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("relative", REFERENCE_CONFIGS)
def test_reference_configs_round_trip(relative, pki):
    path = reference_path(relative)
    with open(path, "rb") as handle:
        original = handle.read()
    machine_type = "worker" if "worker" in relative else "controlplane"
    edited = check_rotation_edits(original, pki, machine_type)
    # Documents other than the v1alpha1 one and KubeAPIServerCAConfig are byte-identical.
    original_documents = original.decode().split("\n---\n")
    edited_documents = edited.decode().split("\n---\n")
    assert len(edited_documents) == len(original_documents)
    for old, new in zip(original_documents[1:], edited_documents[1:]):
        if "kind: KubeAPIServerCAConfig\n" not in old:
            assert new == old


@pytest.mark.parametrize("relative", REFERENCE_CONFIGS)
def test_reference_configs_read(relative):
    path = reference_path(relative)
    with open(path, "rb") as handle:
        config = MachineConfig.parse(handle.read(), path)
    talos = config.get_ca(KIND_TALOS)
    kubernetes = config.get_ca(KIND_KUBERNETES)
    assert x509.load_pem_x509_certificate(talos.issuing_crt).subject.rfc4514_string() == "O=talos"
    if config.machine_type == "worker":
        assert talos.issuing_key is None and kubernetes.issuing_key is None
    else:
        assert b"ED25519 PRIVATE KEY" in talos.issuing_key and b"EC PRIVATE KEY" in kubernetes.issuing_key
    expected_location = "KubeAPIServerCAConfig" if "v1.15" in relative else "cluster.ca"
    assert config.kubernetes_ca_location == expected_location
    if "v1.15" in relative and config.machine_type == "worker":
        # v1.15 workers: no issuingCA, the Kubernetes CA is the only accepted CA.
        assert kubernetes.issuing_crt is None and len(kubernetes.accepted) == 1
        kubernetes_crt = kubernetes.accepted[0]
    else:
        kubernetes_crt = kubernetes.issuing_crt
    assert x509.load_pem_x509_certificate(kubernetes_crt).subject.rfc4514_string() == "O=kubernetes"


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("machine_type", ["init", "controlplane", "worker"])
def test_generated_shapes_round_trip(shape, machine_type, pki):
    original = SHAPES[shape](pki, machine_type).encode()
    check_rotation_edits(original, pki, machine_type)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_generated_shapes_read_back(shape, pki):
    config = MachineConfig.parse(SHAPES[shape](pki, "controlplane").encode(), "cp.yaml")
    talos = config.get_ca(KIND_TALOS)
    assert (talos.issuing_crt, talos.issuing_key, talos.accepted) == (pki["talos_old"][0], pki["talos_old"][1], ())
    kubernetes = config.get_ca(KIND_KUBERNETES)
    assert (kubernetes.issuing_crt, kubernetes.issuing_key) == pki["k8s_old"]
    assert config.kubernetes_ca_location == ("KubeAPIServerCAConfig" if shape == "v1.15" else "cluster.ca")
    assert config.is_control_plane


MUTATIONS = [
    ("# Uncomment this to enable SANs.", "# uncomment this to enable SANs."),  # a comment
    ("    #     - crt: TFMw", "    #     - crt: XFMw"),  # a commented-out block
    ("permissions: 0o666", "permissions: 0o644"),
    ("- '!10.0.0.3/32'", "- \"!10.0.0.3/32\""),  # re-quoted
    ("        nodeIP:\n            validSubnets:\n                - 10.0.0.0/8\n                - '!10.0.0.3/32'\n",
     "        nodeIP:\n          validSubnets:\n            - 10.0.0.0/8\n            - '!10.0.0.3/32'\n"),  # re-indented
    ("kernel.sysrq: on", "kernel.sysrq: true"),
    ("    \n    # Used to provide", "\n    # Used to provide"),  # whitespace of a blank line
]


@pytest.mark.parametrize("old,new", MUTATIONS)
def test_the_outside_check_catches_changes_elsewhere(old, new, pki):
    original = commented_config(pki, "controlplane")
    config = MachineConfig.parse(original.encode(), "cp.yaml")
    config.set_ca(KIND_TALOS, pki["talos_new"][0], pki["talos_new"][1], (pki["talos_old"][0],))
    edited = config.to_bytes().decode()
    assert outside_owned_lines(edited) == outside_owned_lines(original)
    assert old in edited
    assert outside_owned_lines(edited.replace(old, new, 1)) != outside_owned_lines(original)


def test_rotation_phases_touch_only_owned_lines(pki):
    original = v1alpha1_config(pki, "controlplane")
    config = MachineConfig.parse(original.encode(), "cp.yaml")
    old_crt, old_key = pki["talos_old"]
    new_crt, new_key = pki["talos_new"]
    for state in [(old_crt, old_key, (new_crt,)), (new_crt, new_key, (old_crt,)), (new_crt, new_key, ())]:
        assert config.set_ca(KIND_TALOS, *state) is True
        text = config.to_bytes().decode()
        assert outside_owned_lines(text) == outside_owned_lines(original)
        got = config.get_ca(KIND_TALOS)
        assert (got.issuing_crt, got.issuing_key, got.accepted) == state
    assert "acceptedCAs" not in config.to_bytes().decode()


def test_accepted_cas_inserted_next_to_ca_with_its_indentation(pki):
    config = MachineConfig.parse(v1alpha1_config(pki, "worker").encode(), "w.yaml")
    config.set_ca(KIND_TALOS, pki["talos_new"][0], None, (pki["talos_old"][0], pki["etcd"][0]))
    lines = config.to_bytes().decode().split("\n")
    start = lines.index("    ca:")
    assert lines[start:start + 6] == [
        "    ca:",
        "        crt: " + b64(pki["talos_new"][0]),
        '        key: ""',
        "    acceptedCAs:",
        "        - crt: " + b64(pki["talos_old"][0]),
        "        - crt: " + b64(pki["etcd"][0]),
    ]
    assert lines[start + 6] == "    certSANs: []"


def test_kube_ca_document_accepted_inserted_after_issuing_ca(pki):
    config = MachineConfig.parse(v115_config(pki, "controlplane").encode(), "cp.yaml")
    config.set_ca(KIND_KUBERNETES, pki["k8s_new"][0], pki["k8s_new"][1], (pki["k8s_old"][0],))
    text = config.to_bytes().decode()
    expected = ("kind: KubeAPIServerCAConfig\nissuingCA:\n    cert: |\n%s\n    key: |\n%s\nacceptedCAs:\n    - |\n%s\n---\n"
                % (indented(pki["k8s_new"][0], 8), indented(pki["k8s_new"][1], 8), indented(pki["k8s_old"][0], 6)))
    assert expected in text


def test_kube_ca_document_issuing_ca_inserted_on_worker_without_key(pki):
    original = v115_config(pki, "worker")
    config = MachineConfig.parse(original.encode(), "w.yaml")
    assert config.set_ca(KIND_KUBERNETES, pki["k8s_new"][0], None, (pki["k8s_old"][0],)) is True
    text = config.to_bytes().decode()
    assert "kind: KubeAPIServerCAConfig\nissuingCA:\n    cert: |\n%s\nacceptedCAs:\n" % indented(pki["k8s_new"][0], 8) in text
    assert "    key:" not in text.split("kind: KubeAPIServerCAConfig")[1]
    assert config.set_ca(KIND_KUBERNETES, None, None, (pki["k8s_old"][0],)) is True
    assert config.to_bytes().decode() == original


def test_literal_header_and_indentation_are_kept(pki):
    original = v115_config(pki, "controlplane").replace("    cert: |\n", "    cert: |-\n")
    config = MachineConfig.parse(original.encode(), "cp.yaml")
    config.set_ca(KIND_KUBERNETES, pki["k8s_new"][0], pki["k8s_new"][1], ())
    assert "    cert: |-\n%s\n    key: |\n" % indented(pki["k8s_new"][0], 8) in config.to_bytes().decode()
    assert der(config.get_ca(KIND_KUBERNETES).issuing_crt) == der(pki["k8s_new"][0])


def test_removing_last_accepted_ca_removes_the_key(pki):
    base = v1alpha1_config(pki, "controlplane")
    with_accepted = base.replace("    certSANs: []\n", "    acceptedCAs:\n        - crt: %s # old CA\n    certSANs: []\n" % b64(pki["talos_new"][0]))
    config = MachineConfig.parse(with_accepted.encode(), "cp.yaml")
    assert config.set_ca(KIND_TALOS, pki["talos_old"][0], pki["talos_old"][1], ()) is True
    assert config.to_bytes().decode() == base


@pytest.mark.parametrize("variant", ["crlf-wrapped", "64-column"])
def test_same_certificate_in_other_pem_layout_is_already_set(variant, pki):
    crt_pem, key_pem = pki["talos_old"]
    body = "".join(crt_pem.decode().strip().split("\n")[1:-1])
    if variant == "crlf-wrapped":
        relaid = "-----BEGIN CERTIFICATE-----\r\n" + "\r\n".join(body[i:i + 76] for i in range(0, len(body), 76)) + "\r\n-----END CERTIFICATE-----"
    else:
        relaid = "\n\n-----BEGIN CERTIFICATE-----\n" + body + "\n-----END CERTIFICATE-----\n\n"
    original = v1alpha1_config(pki, "controlplane")
    config = MachineConfig.parse(original.replace(b64(crt_pem), b64(relaid.encode())).encode(), "cp.yaml")
    before = config.to_bytes()
    assert config.set_ca(KIND_TALOS, crt_pem, key_pem, ()) is False
    assert config.to_bytes() == before
    # a change of the key alone leaves the certificate's own bytes alone
    assert config.set_ca(KIND_TALOS, crt_pem, pki["talos_new"][1], ()) is True
    assert "        crt: %s\n" % b64(relaid.encode()) in config.to_bytes().decode()


def test_raw_pem_with_other_wrapping_is_already_set(pki):
    original = v115_config(pki, "worker")
    crt_pem = pki["k8s_old"][0]
    body = "".join(crt_pem.decode().strip().split("\n")[1:-1])
    lines = ["-----BEGIN CERTIFICATE-----"] + [body[i:i + 40] for i in range(0, len(body), 40)] + ["-----END CERTIFICATE-----"]
    rewrapped = "\n".join("      " + line for line in lines)
    text = original.replace(indented(crt_pem, 6), rewrapped)
    assert text != original
    config = MachineConfig.parse(text.encode(), "w.yaml")
    assert config.set_ca(KIND_KUBERNETES, None, None, (crt_pem,)) is False
    assert config.to_bytes().decode() == text


@pytest.mark.parametrize("quote", ['"', "'"])
def test_quoted_values_keep_their_quotes(quote, pki):
    crt_b64 = b64(pki["talos_old"][0])
    original = v1alpha1_config(pki, "worker").replace("crt: " + crt_b64, "crt: %s%s%s" % (quote, crt_b64, quote), 1)
    config = MachineConfig.parse(original.encode(), "w.yaml")
    config.set_ca(KIND_TALOS, pki["talos_new"][0], None, ())
    assert "        crt: %s%s%s\n" % (quote, b64(pki["talos_new"][0]), quote) in config.to_bytes().decode()
    config.set_ca(KIND_TALOS, pki["talos_old"][0], None, ())
    assert config.to_bytes().decode() == original


def test_crlf_file_gets_crlf_lines(pki):
    original = v1alpha1_config(pki, "controlplane").replace("\n", "\r\n")
    config = MachineConfig.parse(original.encode(), "cp.yaml")
    config.set_ca(KIND_TALOS, pki["talos_new"][0], pki["talos_new"][1], (pki["talos_old"][0],))
    text = config.to_bytes().decode()
    assert "\n" not in text.replace("\r\n", "")
    assert "\r\n    acceptedCAs:\r\n        - crt: " in text
    config.set_ca(KIND_TALOS, *pki["talos_old"], ())
    assert config.to_bytes().decode() == original


def test_file_without_final_line_break(pki):
    original = v1alpha1_config(pki, "controlplane").replace("    discovery:\n        enabled: true\n", "").rstrip("\n")
    assert original.endswith("key: " + b64(pki["k8s_old"][1]))
    config = MachineConfig.parse(original.encode(), "cp.yaml")
    config.set_ca(KIND_KUBERNETES, pki["k8s_new"][0], pki["k8s_new"][1], (pki["k8s_old"][0],))
    text = config.to_bytes().decode()
    assert text.endswith("\n    acceptedCAs:\n        - crt: " + b64(pki["k8s_old"][0]))
    config.set_ca(KIND_KUBERNETES, *pki["k8s_old"], ())
    assert config.to_bytes().decode() == original


def test_flow_style_accepted_list_becomes_block(pki):
    original = v1alpha1_config(pki, "controlplane").replace("    certSANs: []\n", "    acceptedCAs: []\n    certSANs: []\n")
    config = MachineConfig.parse(original.encode(), "cp.yaml")
    assert config.get_ca(KIND_TALOS).accepted == ()
    config.set_ca(KIND_TALOS, *pki["talos_old"], (pki["talos_new"][0],))
    assert "    acceptedCAs:\n        - crt: %s\n    certSANs: []\n" % b64(pki["talos_new"][0]) in config.to_bytes().decode()


def test_flow_style_ca_mapping_is_rewritten_in_block_style(pki):
    crt_b64 = b64(pki["talos_old"][0])
    original = v1alpha1_config(pki, "worker").replace('    ca:\n        crt: %s\n        key: ""\n' % crt_b64,
                                                      '    ca: {crt: %s, key: ""}\n' % crt_b64, 1)
    config = MachineConfig.parse(original.encode(), "w.yaml")
    assert config.get_ca(KIND_TALOS).issuing_crt == pki["talos_old"][0]
    config.set_ca(KIND_TALOS, pki["talos_new"][0], None, ())
    assert '    ca:\n        crt: %s\n        key: ""\n    certSANs' % b64(pki["talos_new"][0]) in config.to_bytes().decode()


def test_missing_ca_is_inserted_after_token(pki):
    crt_b64 = b64(pki["talos_old"][0])
    original = v1alpha1_config(pki, "worker").replace('    ca:\n        crt: %s\n        key: ""\n' % crt_b64,
                                                      "    acceptedCAs:\n        - crt: %s\n" % crt_b64, 1)
    config = MachineConfig.parse(original.encode(), "w.yaml")
    assert config.get_ca(KIND_TALOS) == CAFields(None, None, (pki["talos_old"][0],))
    config.set_ca(KIND_TALOS, pki["talos_new"][0], None, (pki["talos_old"][0],))
    assert ('    token: d8cwfa.eyvpi0xwxyarbfid\n    ca:\n        crt: %s\n        key: ""\n    acceptedCAs:\n'
            % b64(pki["talos_new"][0])) in config.to_bytes().decode()


def test_worker_key_is_emptied_not_removed(pki):
    original = v1alpha1_config(pki, "worker").replace('        key: ""\n', "        key: %s\n" % b64(pki["talos_old"][1]), 1)
    config = MachineConfig.parse(original.encode(), "w.yaml")
    assert config.get_ca(KIND_TALOS).issuing_key == pki["talos_old"][1]
    assert config.set_ca(KIND_TALOS, pki["talos_old"][0], None, ()) is True
    assert config.to_bytes().decode() == v1alpha1_config(pki, "worker")


def test_worker_refuses_a_key(pki):
    config = MachineConfig.parse(v1alpha1_config(pki, "worker").encode(), "w.yaml")
    before = config.to_bytes()
    with pytest.raises(ConfigError, match=r"w\.yaml is a worker: workers never hold a CA key.*machine\.ca"):
        config.set_ca(KIND_TALOS, *pki["talos_new"], ())
    assert config.to_bytes() == before


@pytest.mark.parametrize("kind", [KIND_TALOS, KIND_KUBERNETES])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_control_plane_needs_the_key(kind, shape, pki):
    config = MachineConfig.parse(SHAPES[shape](pki, "controlplane").encode(), "cp.yaml")
    crt = pki["talos_new" if kind == KIND_TALOS else "k8s_new"][0]
    with pytest.raises(ConfigError, match="cp.yaml is a controlplane node: it needs the issuing %s CA certificate and its key" % kind):
        config.set_ca(kind, crt, None, ())


def test_state_without_any_ca_is_refused(pki):
    config = MachineConfig.parse(v115_config(pki, "worker").encode(), "w.yaml")
    with pytest.raises(ConfigError, match="no kubernetes CA at all.*KubeAPIServerCAConfig issuingCA"):
        config.set_ca(KIND_KUBERNETES, None, None, ())


@pytest.mark.parametrize("issuing,key,accepted,message", [
    (b"not pem", None, (), "the new talos CA certificate is not PEM"),
    ("CERT", None, (), "holds 2 certificates, expected exactly one"),
    ("KEY", None, (), "holds a ED25519 PRIVATE KEY block where only CERTIFICATE blocks belong"),
    ("CERT1", "CERT1", (), "the new talos CA key must be exactly one private key PEM block"),
    ("CERT1", None, ("KEY",), "accepted CA 1 of talos holds a ED25519 PRIVATE KEY block"),
    ("CERT1", None, (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",), "has a damaged CERTIFICATE PEM block"),
])
def test_bad_inputs_are_refused(issuing, key, accepted, message, pki):
    values = {"CERT": pki["talos_new"][0] + pki["talos_old"][0], "CERT1": pki["talos_new"][0], "KEY": pki["talos_new"][1]}
    config = MachineConfig.parse(v1alpha1_config(pki, "worker").encode(), "w.yaml")
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.set_ca(KIND_TALOS, values.get(issuing, issuing), values.get(key, key), tuple(values.get(a, a) for a in accepted))


def test_unknown_kind_is_a_programming_error(pki):
    config = MachineConfig.parse(v1alpha1_config(pki).encode(), "cp.yaml")
    with pytest.raises(ValueError, match="unknown CA kind 'etcd'"):
        config.get_ca("etcd")


def test_anchored_value_is_not_edited(pki):
    crt_b64 = b64(pki["talos_old"][0])
    original = v1alpha1_config(pki, "worker").replace("    ca:\n        crt: " + crt_b64, "    ca:\n        crt: &talosca " + crt_b64, 1)
    config = MachineConfig.parse(original.encode(), "w.yaml")
    with pytest.raises(ConfigError, match="machine.ca.crt carries a YAML anchor"):
        config.set_ca(KIND_TALOS, pki["talos_new"][0], None, ())
    assert config.to_bytes().decode() == original


def test_failed_verification_leaves_the_text_unchanged(pki, monkeypatch):
    original = v1alpha1_config(pki, "controlplane")
    config = MachineConfig.parse(original.encode(), "cp.yaml")
    real_shape = _machineconfig.YAMLText.shape
    calls = []

    def drifting_shape(self, skip):
        calls.append(skip)
        return (len(calls), real_shape(self, skip).picture)  # never equal before/after: as if something else changed

    monkeypatch.setattr(_machineconfig.YAMLText, "shape", drifting_shape)
    with pytest.raises(ConfigError, match="did not read back as intended; nothing was changed"):
        config.set_ca(KIND_TALOS, *pki["talos_new"], ())
    assert config.to_bytes().decode() == original
    assert config.get_ca(KIND_TALOS).issuing_crt == pki["talos_old"][0]


def _kube_ca_and_cluster_ca(pki):
    return v1alpha1_config(pki, "controlplane") + "---\napiVersion: v1alpha1\nkind: KubeAPIServerCAConfig\nissuingCA:\n    cert: |\n%s\n" % (
        indented(pki["k8s_old"][0], 8))


BAD_CONFIGS = [
    ("yaml", lambda pki: "machine:\n  type: worker\n   token: x\n", r"bad\.yaml is not valid YAML at line 3, column \d+: .*Fix the file"),
    ("utf8", lambda pki: b"version: v1alpha1\nmachine: \xff\n", r"bad\.yaml is not UTF-8 text"),
    ("no-v1alpha1", lambda pki: "apiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n", r"bad\.yaml has no v1alpha1 document"),
    ("empty", lambda pki: "", r"bad\.yaml has no v1alpha1 document"),
    ("two-v1alpha1", lambda pki: v1alpha1_config(pki) + "---\n" + v1alpha1_config(pki), r"has 2 v1alpha1 documents \(documents 1, 2\).*keep only one"),
    ("both-kubernetes-cas", _kube_ca_and_cluster_ca,
     r"sets the Kubernetes CA twice, in cluster\.ca and in the KubeAPIServerCAConfig document: Talos rejects that.*Remove cluster\.ca"),
    ("two-kube-ca-docs", lambda pki: v115_config(pki) + "---\nkind: KubeAPIServerCAConfig\napiVersion: v1alpha1\n",
     r"has 2 KubeAPIServerCAConfig documents"),
    ("no-machine", lambda pki: "version: v1alpha1\ncluster: {}\n", r"the v1alpha1 document has no `machine` section"),
    ("bad-type", lambda pki: v1alpha1_config(pki).replace("type: controlplane", "type: master"), r"machine\.type must be one of init, controlplane, worker"),
    ("list-document", lambda pki: v1alpha1_config(pki) + "---\n- a\n", r"document 2 is a sequence, not a mapping"),
    ("unknown-document", lambda pki: v1alpha1_config(pki) + "---\nfoo: bar\n", r"document 2 has neither `kind` nor `version: v1alpha1`"),
    ("duplicate-ca", lambda pki: v1alpha1_config(pki).replace("    certSANs: []\n", "    ca: {}\n    certSANs: []\n"),
     r"machine\.ca appears twice \(lines 7 and 10\): keep only one"),
    ("machine-list", lambda pki: "version: v1alpha1\nmachine:\n    - type\n", r"machine must be a mapping"),
]


@pytest.mark.parametrize("name", [case[0] for case in BAD_CONFIGS])
def test_bad_configs_are_refused_at_parse(name, pki):
    build, message = [case[1:] for case in BAD_CONFIGS if case[0] == name][0]
    data = build(pki)
    with pytest.raises(ConfigError, match=message) as info:
        MachineConfig.parse(data if isinstance(data, bytes) else data.encode(), "bad.yaml")
    assert b64(pki["talos_old"][1])[40:80] not in str(info.value)


BAD_FIELDS = [
    ("raw-pem", lambda pki: ("crt: " + b64(pki["talos_old"][0]), "crt: '%s'" % pki["talos_old"][0].decode().replace("\n", " ")),
     KIND_TALOS, r"bad\.yaml: machine\.ca\.crt holds raw PEM, but Talos stores the base64 of the PEM text there"),
    ("not-base64", lambda pki: ("key: " + b64(pki["talos_old"][1]), "key: " + b64(pki["talos_old"][1])[:-3] + "*"),
     KIND_TALOS, r"bad\.yaml: machine\.ca\.key is not valid base64.*restore the value generated by talosctl"),
    ("base64-not-pem", lambda pki: ("crt: " + b64(pki["talos_old"][0]), "crt: aGVsbG8gd29ybGQ="),
     KIND_TALOS, r"machine\.ca\.crt is base64 but does not decode to PEM text"),
    ("key-in-crt", lambda pki: ("crt: " + b64(pki["talos_old"][0]), "crt: " + b64(pki["talos_old"][1])),
     KIND_TALOS, r"machine\.ca\.crt holds a ED25519 PRIVATE KEY block where only CERTIFICATE blocks belong"),
    ("crt-in-key", lambda pki: ("key: " + b64(pki["k8s_old"][1]), "key: " + b64(pki["k8s_old"][0])),
     KIND_KUBERNETES, r"cluster\.ca\.key must be exactly one private key PEM block \(found: CERTIFICATE\)"),
    ("ca-not-mapping", lambda pki: ("    ca:\n        crt: " + b64(pki["k8s_old"][0]) + "\n        key: " + b64(pki["k8s_old"][1]),
                                    "    ca: " + b64(pki["k8s_old"][0])),
     KIND_KUBERNETES, r"cluster\.ca must be a mapping with `crt` and `key`"),
    ("accepted-not-list", lambda pki: ("    certSANs: []", "    acceptedCAs: x\n    certSANs: []"),
     KIND_TALOS, r"machine\.acceptedCAs must be a list"),
    ("accepted-without-crt", lambda pki: ("    certSANs: []", "    acceptedCAs:\n        - cert: x\n    certSANs: []"),
     KIND_TALOS, r"machine\.acceptedCAs\[0\] must be a mapping with `crt`"),
    ("accepted-empty-crt", lambda pki: ("    certSANs: []", "    acceptedCAs:\n        - crt: \"\"\n    certSANs: []"),
     KIND_TALOS, r"machine\.acceptedCAs\[0\] is empty: remove the entry"),
]


@pytest.mark.parametrize("name", [case[0] for case in BAD_FIELDS])
def test_bad_ca_fields_are_reported_with_their_place(name, pki):
    build, kind, message = [case[1:] for case in BAD_FIELDS if case[0] == name][0]
    old, new = build(pki)
    text = v1alpha1_config(pki, "controlplane")
    assert old in text
    config = MachineConfig.parse(text.replace(old, new, 1).encode(), "bad.yaml")
    with pytest.raises(ConfigError, match=message) as info:
        config.get_ca(kind)
    for secret in (pki["talos_old"][1], pki["k8s_old"][1]):
        assert b64(secret)[30:70] not in str(info.value)
        assert secret.decode().split("\n")[1][:40] not in str(info.value)


def test_raw_pem_field_that_is_not_pem(pki):
    text = v115_config(pki, "controlplane").replace("    key: |\n", "    key: |\n        garbage\n", 1)
    config = MachineConfig.parse(text.encode(), "bad.yaml")
    with pytest.raises(ConfigError, match=r"KubeAPIServerCAConfig issuingCA\.key has text outside its PEM blocks"):
        config.get_ca(KIND_KUBERNETES)


def test_yaml_error_on_a_key_line_does_not_echo_the_key(pki):
    text = v1alpha1_config(pki, "controlplane").replace("        key: " + b64(pki["talos_old"][1]), "        key: " + b64(pki["talos_old"][1]) + ": x", 1)
    with pytest.raises(ConfigError) as info:
        MachineConfig.parse(text.encode(), "bad.yaml")
    assert "line 9" in str(info.value)
    assert b64(pki["talos_old"][1])[:60] not in str(info.value)


MINIMAL = "version: v1alpha1\nmachine:\n  type: controlplane\n{network}cluster:\n  clusterName: prod\n"


@pytest.mark.parametrize("network,documents,expected", [
    ("", "", ()),
    ("  network:\n    interfaces:\n      - interface: eth0\n        dhcp: true\n        vip:\n          ip: 10.5.0.10\n", "", ("10.5.0.10",)),
    ("  network:\n    interfaces:\n      - interface: eth0\n        vlans:\n          - vlanId: 42\n            vip:\n              ip: 10.42.0.10\n",
     "", ("10.42.0.10",)),
    ("", "---\napiVersion: v1alpha1\nkind: Layer2VIPConfig\nname: 10.5.0.10\nlink: eth0\n", ("10.5.0.10",)),
    ("", "---\napiVersion: v1alpha1\nkind: HCloudVIPConfig\nname: 10.5.0.11\nlink: eth0\napiToken: secret\n", ("10.5.0.11",)),
    # Declared twice (old field and new document): once.
    ("  network:\n    interfaces:\n      - interface: eth0\n        vip:\n          ip: 10.5.0.10\n",
     "---\napiVersion: v1alpha1\nkind: Layer2VIPConfig\nname: 10.5.0.10\nlink: eth0\n", ("10.5.0.10",)),
    # Odd shapes declare nothing rather than fail the read.
    ("  network:\n    interfaces: eth0\n", "", ()),
    ("  network:\n    interfaces:\n      - vip: 10.5.0.10\n", "", ()),
])
def test_virtual_ips_are_read_from_both_places_talos_declares_them(network, documents, expected):
    config = MachineConfig.parse((MINIMAL.format(network=network) + documents).encode())
    assert config.virtual_ips == expected


@pytest.mark.parametrize("relative", REFERENCE_CONFIGS)
def test_reference_configs_declare_no_virtual_ip(relative):
    with open(reference_path(relative), "rb") as handle:
        assert MachineConfig.parse(handle.read()).virtual_ips == ()
