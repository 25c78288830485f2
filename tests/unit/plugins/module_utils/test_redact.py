"""The one redaction: every secret value of a machine config (any Talos version), a secrets bundle, a talosconfig or a
kubeconfig is masked in what the collection shows - node dry-run diffs, errors, audit entries - and nothing else is."""

import difflib
import os

import pytest
import yaml as pyyaml
from talos_sim import machineconfig as sim_config

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._redact import REDACTED, redact, redact_fields


@pytest.fixture(name="key_pem", scope="module")
def fixture_key_pem():
    return _pki.generate_ca("kubernetes").key.decode()


@pytest.fixture(name="secrets", scope="module")
def fixture_secrets():
    return sim_config.ClusterSecrets.generate("sweep")


def secret_values(secrets):
    """Every secret of the bundle as it appears in a config: tokens (and their secret halves), secrets, key lines."""
    values = {secrets.cluster_secret, secrets.bootstrap_token, secrets.trustd_token, secrets.secretbox_secret,
              secrets.bootstrap_token.split(".")[1], secrets.trustd_token.split(".")[1]}
    for pem in (secrets.os_ca.key_pem, secrets.k8s_ca.key_pem, secrets.etcd_ca.key_pem, secrets.aggregator_ca.key_pem,
                secrets.service_account_key_pem):
        values.add(sim_config.pki.b64(pem)[:60])
        values.update(line for line in pem.decode().splitlines()[1:-1] if len(line) > 16)
    return values


def whole_diff(before, after):
    """A unified diff whose context is the whole config, as a dry run of a small change could show any of it."""
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), "a", "b", n=10000))


@pytest.mark.parametrize("tag", ["v1.7.6", "v1.13.4", "v1.15.0"])
@pytest.mark.parametrize("machine_type", ["controlplane", "worker"])
def test_no_secret_of_a_generated_config_survives_in_a_dry_run_diff(secrets, tag, machine_type):
    config = sim_config.generate(secrets, machine_type, sim_config.TalosVersion.parse(tag), "10.5.0.2", "v1.33.0").decode()
    changed = config.replace("    certSANs: []\n", "    certSANs: []\n    acceptedCAs:\n        - crt: QUJD\n", 1)
    assert changed != config
    for text in (config, whole_diff(config, changed)):
        masked = redact(text)
        present = sorted(value for value in secret_values(secrets) if value in text)
        assert present, "the config holds none of the secrets: the check would prove nothing"
        assert not [value for value in present if value in masked]
        # What is not secret stays readable: a diff still says what changes.
        assert "kind: KubeAPIServerCAConfig" in masked or tag != "v1.15.0"
        assert "type: %s" % machine_type in masked
    assert "+    acceptedCAs:" in redact(whole_diff(config, changed))


@pytest.mark.parametrize("line,secret", [
    ("    token: 2z19nz.e8oeemr4l3caw64b # The `token` is used by a machine to join the PKI of the cluster.", "e8oeemr4l3caw64b"),
    ("    aescbcEncryptionSecret: +AdmkjvLQAOGUwMfsd2OkAsZ6nj4RgVEOupJVbvkmhM=", "AdmkjvLQAOGUwMfsd2OkAsZ6nj4"),
    ("+   secretboxEncryptionSecret: 45yd2Ke+sytiICojDf8aibTfgt99nzJmO53cjDqrCto=", "45yd2Ke+syti"),
    (" clusterSecret: pofHbABZq7VXuObsdLdy/bHmz6hlMHZ3p8+6WKrv1ic=", "pofHbABZq7VX"),
    ("-    secret: BVpg0EsnQ5vfvHvMN5Yc2+qyzbvJpLNokgdNqmYRxEU=", "BVpg0EsnQ5vf"),
    ("                    - name: key2\n                      secret: 45yd2Ke+sytiICojDf8aibTfgt9", "45yd2Ke+syti"),
    ("          password: hunter2-registry", "hunter2-registry"),
    ("          auth: dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
    ("          identityToken: eyJhbGciOi.payload.sig", "eyJhbGciOi"),
    ("        privateKey: ABCDEFwireguardprivate=", "ABCDEFwireguardprivate"),
    ("            presharedKey: presharedvalue123=", "presharedvalue123"),
    ("                  passphrase: my-disk-passphrase", "my-disk-passphrase"),
    ("    https_proxy: http://user:proxy-password@10.0.0.1:3128/", "proxy-password"),
    ("apiUrl: https://siderolink.example.com:443?jointoken=sidero-join-token&grpc_tunnel=true", "sidero-join-token"),
    ('{"token": "json-token-value", "node": "10.5.0.2"}', "json-token-value"),
    ("{'cluster': {'secret': 'python-repr-secret'}}", "python-repr-secret"),
    ("{token: flow-token-value, other: 1}", "flow-token-value"),
    ("    Token: \"1234567\"", "1234567"),
    ("    client-key-data: TFMwdExTMUNSVWRK", "TFMwdExTMUNSVWRK"),
])
def test_secret_values_in_every_spelling_are_masked(line, secret):
    masked = redact(line)
    assert secret not in masked and REDACTED in masked


def test_a_token_quoted_without_its_name_is_masked(secrets):
    masked = redact("apply failed: unexpected value %s in the config" % secrets.trustd_token)
    assert secrets.trustd_token.split(".")[1] not in masked and "apply failed" in masked


@pytest.mark.parametrize("text", [
    "    publicKey: ABCDEF=\n",
    "    endpoint: https://10.5.0.2:6443\n",
    "    certSANs: []\n",
    "    key: \"\"\n",
    "secrets:\n    bootstraptoken:\n",
    "machine.token is the trustd join token\n",
    "    keys:\n",
])
def test_what_is_not_a_secret_value_stays(text):
    assert redact(text) == text


def test_a_secret_block_scalar_is_masked_to_its_end(key_pem):
    diff = ("@@ -1,9 +1,10 @@\n kind: KubeServiceAccountConfig\n issuer:\n     privateKey: |\n"
            + "".join("         %s\n" % line for line in key_pem.strip().splitlines()) + "+    issuerURL: https://base:6443\n")
    masked = redact(diff)
    for line in key_pem.strip().splitlines()[1:-1]:
        assert line not in masked
    assert "+    issuerURL: https://base:6443" in masked and "kind: KubeServiceAccountConfig" in masked
    multiline = redact("keys:\n    - secret: |\n        not-a-pem-but-secret\n    - name: key1\n")
    assert "not-a-pem-but-secret" not in multiline and "- name: key1" in multiline


def test_whole_key_blocks_and_key_values_are_masked(key_pem):
    text = "cluster:\n    ca:\n        crt: QUJD\n        key: TFMwdExTMUNSVWRKVGlCRlF5QlFVa2xXUVZSRklFdEZXUzB0TFMwdA==\n" + key_pem
    masked = redact(text)
    assert "key: <redacted>" in masked and "crt: QUJD" in masked
    assert "PRIVATE KEY" not in masked


def test_base64_of_a_private_key_is_masked_wherever_it_stands(key_pem):
    encoded = sim_config.pki.b64(key_pem.encode())
    masked = redact("cannot parse value %s of the node's config" % encoded)
    assert encoded[:40] not in masked and REDACTED in masked


def test_a_raw_pem_key_cut_by_a_diff_hunk_is_masked_to_its_last_line(key_pem):
    # A v1.14+ KubeAPIServerCAConfig holds the key as raw PEM; a hunk may start inside it.
    body = key_pem.strip().splitlines()[1:]
    hunk = "@@ -84,6 +84,19 @@\n" + "".join("         %s\n" % line for line in body[1:]) + "+acceptedCAs:\n+    - |\n"
    masked = redact(hunk)
    for line in body[1:-1]:
        assert line not in masked
    assert "-----END EC PRIVATE KEY-----" in masked and "+acceptedCAs:" in masked


def test_short_last_key_line_alone_before_the_end_marker(key_pem):
    last = key_pem.strip().splitlines()[-2]
    masked = redact(" %s\n -----END EC PRIVATE KEY-----\n kind: KubeAPIServerCAConfig\n" % last)
    assert last not in masked and "kind: KubeAPIServerCAConfig" in masked


def test_fingerprints_and_paths_stay_readable(key_pem):
    fingerprint = _pki.fingerprint(_pki.generate_ca("kubernetes").crt)
    fields = {"ca_fingerprint": fingerprint, "path": "/tmp/rotation/talos/talosconfig", "accepted": [fingerprint]}
    assert redact_fields(fields) == fields
    assert redact("%s\n" % fingerprint) == "%s\n" % fingerprint


def test_fields_are_redacted_deeply_and_other_values_kept():
    fields = {"node": "10.5.0.2", "error": ["token: abc.defghijklmnop"], "seconds": 1.5, "nested": {"msg": "secret: xyz"}}
    assert redact_fields(fields) == {"node": "10.5.0.2", "error": ["token: <redacted>"], "seconds": 1.5,
                                     "nested": {"msg": "secret: <redacted>"}}


def test_audit_entries_are_redacted(tmp_path, secrets):
    rotation = _rotation_store.create(str(tmp_path / "talos"), "talos", _pki.generate_ca("talos").crt, _pki.generate_ca("talos"))
    rotation.record("node_failed", node="10.5.0.2", error="apply refused:\n    token: %s\n" % secrets.trustd_token)
    with open(rotation.file(_rotation_store.AUDIT_LOG), encoding="utf-8") as handle:
        text = handle.read()
    assert "node_failed" in text and "10.5.0.2" in text and secrets.trustd_token.split(".")[1] not in text


REFERENCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "..", "shared", "talos-reference")
REFERENCE_FILES = ["machineconfig-v1.7/base-controlplane.yaml", "machineconfig-v1.13/base-controlplane.yaml",
                   "machineconfig-v1.15/base-controlplane.yaml", "machineconfig-v1.15/base-worker.yaml",
                   "machineconfig-commented/controlplane.yaml", "secrets.yaml", "secrets-stability.yaml"]
SECRET_NAMES = {"token", "secret", "clustersecret", "secretboxencryptionsecret", "aescbcencryptionsecret", "bootstraptoken",
                "key", "privatekey"}


def reference_secrets(document):
    """Every secret value in a parsed Talos file, as strings that must not survive: values whole, PEM and base64 values
    by their lines or first 60 characters."""
    found = set()
    if isinstance(document, dict):
        for name, value in document.items():
            if str(name).lower() in SECRET_NAMES and isinstance(value, str) and value:
                lines = [line for line in value.splitlines() if line and not line.startswith("-----")]
                found.update(line[:60] for line in lines if len(line) >= 12)  # not a sample such as `key: value`
            else:
                found |= reference_secrets(value)
    elif isinstance(document, list):
        for value in document:
            found |= reference_secrets(value)
    return found


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_no_secret_of_a_real_talos_file_survives(name):
    path = os.path.join(REFERENCE_DIR, name)
    if not os.path.exists(path):
        pytest.fail("%s is missing: these Talos-generated files (../shared/talos-reference) are what proves the redaction "
                    "on real configs" % path)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    secrets = set()
    for document in pyyaml.safe_load_all(text):
        secrets |= reference_secrets(document)
    assert len(secrets) >= 3, "no secrets found: the check would prove nothing"
    changed = text.replace("\n", "\n# changed\n", 1)
    for shown in (text, whole_diff(text, changed)):
        masked = redact(shown)
        assert not sorted(secret for secret in secrets if secret in masked)
