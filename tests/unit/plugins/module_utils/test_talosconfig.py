"""talosconfig and secrets bundle: parse, surgical edits, 0600 writes, backups, and every bad input."""

import base64
import datetime
import os
import re
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import (
    KIND_AGGREGATOR,
    KIND_ETCD,
    KIND_KUBERNETES,
    KIND_TALOS,
    SecretsBundle,
    TalosConfig,
    TalosContext,
    find_talosconfig,
)

from talos_reference import reference_path  # pylint: disable=import-error


# --- key material in Talos's shapes ----------------------------------------------------------------

def _pem_key(key, edwards):
    if not edwards:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.replace(b"BEGIN PRIVATE KEY", b"BEGIN ED25519 PRIVATE KEY").replace(b"END PRIVATE KEY", b"END ED25519 PRIVATE KEY")


def make_ca(organization, edwards=False):
    key = ed25519.Ed25519PrivateKey.generate() if edwards else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, None if edwards else hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key, edwards), key


def make_client(ca_key):
    """An `os:admin` client certificate (Ed25519, EKU exactly ClientAuth) from an Ed25519 CA."""
    key = ed25519.Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "os:admin")]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "talos")])).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, None))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key, True)


@pytest.fixture(scope="module", name="pki")
def pki_fixture():
    material = {}
    for name, organization, edwards in (("talos_old", "talos", True), ("talos_new", "talos", True), ("k8s", "kubernetes", False),
                                        ("k8s_new", "kubernetes", False), ("etcd", "etcd", False), ("aggregator", "front-proxy", False)):
        crt, key, private = make_ca(organization, edwards)
        material[name] = (crt, key)
        if name.startswith("talos"):
            material[name + "_client"] = make_client(private)
    return material


def b64(pem):
    return base64.b64encode(pem).decode("ascii")


def der(pem):
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def talosconfig_text(pki, current="prod"):
    """A talosconfig as talosctl writes it (4-space indent, base64 PEM), plus a hand-written comment."""
    client_crt, client_key = pki["talos_old_client"]
    return (
        "context: %s\n"
        "contexts:\n"
        "    prod:\n"
        "        endpoints:\n"
        "            - 10.5.0.2\n"
        "            - 10.5.0.3\n"
        "        nodes:\n"
        "            - 10.5.0.2\n"
        "        ca: %s\n"
        "        crt: %s\n"
        "        key: %s\n"
        "    # staging cluster, kept by hand\n"
        "    staging:\n"
        "        endpoints:\n"
        "            - staging.example.com\n"
        "        ca: %s\n"
        "        crt: %s\n"
        "        key: %s\n"
        % (current, b64(pki["talos_old"][0]), b64(client_crt), b64(client_key), b64(pki["talos_old"][0]), b64(client_crt), b64(client_key))
    )


def secrets_text(pki):
    """A bundle in the `talosctl gen secrets` shape (lower-case Go field names)."""
    return (
        "# test set of secrets\n"
        "cluster:\n"
        "    id: 0raF93qnkMvF-FZNuvyGozXNdLiT2FOWSlyBaW4PR-w=\n"
        "    secret: pofHbABZq7VXuObsdLdy/bHmz6hlMHZ3p8+6WKrv1ic=\n"
        "secrets:\n"
        "    bootstraptoken: inn7ol.u4ehnti8qyls9ymo\n"
        "    secretboxencryptionsecret: 45yd2Ke+sytiICojDf8aibTfgt99nzJmO53cjDqrCto=\n"
        "trustdinfo:\n"
        "    token: d8cwfa.eyvpi0xwxyarbfid\n"
        "certs:\n"
        "    etcd:\n"
        "        crt: %s\n"
        "        key: %s\n"
        "    k8s:\n"
        "        crt: %s\n"
        "        key: %s\n"
        "    k8saggregator:\n"
        "        crt: %s\n"
        "        key: %s\n"
        "    k8sserviceaccount:\n"
        "        key: %s\n"
        "    os:\n"
        "        crt: %s\n"
        "        key: %s\n"
        % (b64(pki["etcd"][0]), b64(pki["etcd"][1]), b64(pki["k8s"][0]), b64(pki["k8s"][1]), b64(pki["aggregator"][0]),
           b64(pki["aggregator"][1]), b64(pki["k8s"][1]), b64(pki["talos_old"][0]), b64(pki["talos_old"][1]))
    )


def new_context(pki, name="prod", endpoints=("10.5.0.2", "10.5.0.3"), nodes=("10.5.0.2",)):
    client_crt, client_key = pki["talos_new_client"]
    return TalosContext(name, tuple(endpoints), tuple(nodes), pki["talos_new"][0] + pki["talos_old"][0], client_crt, client_key)


def lines_between(text, first, last):
    lines = text.split("\n")
    return lines[lines.index(first):lines.index(last) + 1]


# --- talosconfig ------------------------------------------------------------------------------------

def test_talosconfig_parse(pki):
    config = TalosConfig.parse(talosconfig_text(pki).encode(), "tc")
    assert config.context_names == ("prod", "staging")
    assert config.current_context_name == "prod"
    current = config.get_context()
    assert current.name == "prod"
    assert (current.endpoints, current.nodes) == (("10.5.0.2", "10.5.0.3"), ("10.5.0.2",))
    assert (current.ca, current.crt, current.key) == (pki["talos_old"][0],) + pki["talos_old_client"]
    staging = config.get_context("staging")
    assert (staging.endpoints, staging.nodes) == (("staging.example.com",), ())


def test_talosconfig_unknown_context_lists_the_available_ones(pki):
    config = TalosConfig.parse(talosconfig_text(pki).encode(), "/home/u/.talos/config")
    with pytest.raises(ConfigError) as info:
        config.get_context("dev")
    assert str(info.value) == "context dev not found in /home/u/.talos/config; available: prod, staging"


def test_set_context_replaces_one_context_and_keeps_the_others(pki):
    original = talosconfig_text(pki)
    config = TalosConfig.parse(original.encode(), "tc")
    wanted = new_context(pki)
    assert config.set_context(wanted) is True
    text = config.to_bytes().decode()
    # everything from the comment before `staging` to the end is untouched, and so is the head
    assert text.split("    # staging cluster")[1] == original.split("    # staging cluster")[1]
    assert text.startswith("context: prod\ncontexts:\n    prod:\n        endpoints:\n            - 10.5.0.2\n")
    reread = TalosConfig.parse(config.to_bytes(), "tc").get_context("prod")
    assert reread == wanted
    assert [der(c) for c in re.findall(b"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", reread.ca, re.S)] == [
        der(pki["talos_new"][0]), der(pki["talos_old"][0])]
    assert config.set_context(wanted) is False
    assert config.to_bytes().decode() == text


def test_set_context_with_same_credentials_in_other_pem_layout_is_no_change(pki):
    original = talosconfig_text(pki)
    config = TalosConfig.parse(original.encode(), "tc")
    crt = pki["talos_old_client"][0].replace(b"\n", b"\r\n")
    same = TalosContext("prod", ("10.5.0.2", "10.5.0.3"), ("10.5.0.2",), pki["talos_old"][0], crt, pki["talos_old_client"][1])
    assert config.set_context(same) is False
    assert config.to_bytes().decode() == original


def test_set_context_adds_a_context_at_the_end(pki):
    original = talosconfig_text(pki)
    config = TalosConfig.parse(original.encode(), "tc")
    added = new_context(pki, name="admin@rotation", endpoints=("fd00::2", "cp.example.com"), nodes=())
    assert config.set_context(added, make_current=False) is True
    text = config.to_bytes().decode()
    assert text.startswith(original)
    assert text[len(original):].startswith('    admin@rotation:\n        endpoints:\n            - "fd00::2"\n            - cp.example.com\n        ca: ')
    assert "nodes" not in text[len(original):]
    assert config.current_context_name == "prod"
    assert TalosConfig.parse(config.to_bytes(), "tc").get_context("admin@rotation") == added
    assert config.set_context(added, make_current=True) is True
    assert config.to_bytes().decode() == "context: admin@rotation\n" + text[len("context: prod\n"):]


def test_set_context_removes_nodes_when_none_given(pki):
    config = TalosConfig.parse(talosconfig_text(pki).encode(), "tc")
    config.set_context(new_context(pki, nodes=()))
    text = config.to_bytes().decode()
    assert lines_between(text, "    prod:", "            - 10.5.0.3")[-1] == "            - 10.5.0.3"
    assert text.split("    # staging")[0].count("nodes:") == 0
    assert config.get_context("prod").nodes == ()


def test_set_context_inserts_current_context_when_missing(pki):
    original = talosconfig_text(pki).replace("context: prod\n", "")
    config = TalosConfig.parse(original.encode(), "tc")
    assert config.current_context_name is None
    with pytest.raises(ConfigError, match="tc has no current context.*talosctl config context NAME"):
        config.get_context()
    config.set_context(config.get_context("staging"), make_current=True)
    assert config.to_bytes().decode() == "context: staging\n" + original


def test_empty_talosconfig_gets_its_first_context(pki):
    config = TalosConfig.empty()
    assert (config.context_names, config.current_context_name) == ((), None)
    context = new_context(pki)
    assert config.set_context(context) is True
    assert config.to_bytes() == TalosConfig.new(context).to_bytes()


def test_new_talosconfig_layout_and_save_mode(pki, tmp_path):
    context = new_context(pki)
    config = TalosConfig.new(context)
    assert config.to_bytes().decode() == (
        "context: prod\ncontexts:\n    prod:\n        endpoints:\n            - 10.5.0.2\n            - 10.5.0.3\n"
        "        nodes:\n            - 10.5.0.2\n        ca: %s\n        crt: %s\n        key: %s\n"
        % (b64(context.ca), b64(context.crt), b64(context.key)))
    path = tmp_path / "talosconfig"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    config.save(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert TalosConfig.load(str(path)).get_context() == context


def test_talosconfig_load_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="talosconfig .*nope does not exist: check the path"):
        TalosConfig.load(str(tmp_path / "nope"))


BAD_TALOSCONFIGS = [
    ("malformed", lambda text: text.replace("    staging:\n", "   staging:\n"), None, r"tc is not valid YAML at line \d+, column \d+"),
    ("empty", lambda text: "", None, r"tc is empty: give a talosconfig"),
    ("list", lambda text: "- a\n", None, r"tc is not a talosconfig"),
    ("no-contexts", lambda text: "context: prod\n", None, r"tc has no `contexts`.*talosctl gen config"),
    ("contexts-list", lambda text: "context: prod\ncontexts:\n    - prod\n", None, r"`contexts` must be a mapping"),
    ("context-not-mapping", lambda text: text.replace("    # staging cluster, kept by hand\n", "    broken: yes\n"), "broken",
     r"context broken must be a mapping"),
    ("missing-crt", lambda text: re.sub(r"        crt: .*\n", "", text, count=1), "prod",
     r"tc: context prod field `crt` is missing or empty \(contexts that authenticate otherwise, e\.g\. Omni `auth:`"),
    ("empty-ca", lambda text: re.sub(r"        ca: .*\n", "        ca: \"\"\n", text, count=1), "prod", r"context prod field `ca` is missing or empty"),
    ("key-not-base64", lambda text: re.sub(r"        key: (.*)\n", lambda m: "        key: %s!\n" % m.group(1)[:-4], text, count=1), "prod",
     r"context prod field `key` is not valid base64"),
    ("crt-is-a-key", lambda text: re.sub(r"        crt: .*\n", lambda m: re.search(r"        key: .*\n", text).group(0).replace("key", "crt"),
                                         text, count=1), "prod",
     r"context prod field `crt` holds a ED25519 PRIVATE KEY block where only CERTIFICATE blocks belong"),
    ("key-is-a-cert", lambda text: re.sub(r"        key: .*\n", lambda m: re.search(r"        crt: .*\n", text).group(0).replace("crt", "key"),
                                          text, count=1), "prod",
     r"context prod field `key` must be exactly one private key PEM block \(found: CERTIFICATE\)"),
    ("endpoints-not-list", lambda text: text.replace("        endpoints:\n            - 10.5.0.2\n            - 10.5.0.3\n",
                                                     "        endpoints: 10.5.0.2\n"), "prod", r"context prod: `endpoints` must be a list"),
    ("two-documents", lambda text: text + "---\nfoo: 1\n", None, r"tc holds 2 YAML documents"),
]


@pytest.mark.parametrize("name", [case[0] for case in BAD_TALOSCONFIGS])
def test_bad_talosconfigs(name, pki):
    mutate, context, message = [case[1:] for case in BAD_TALOSCONFIGS if case[0] == name][0]
    text = mutate(talosconfig_text(pki))
    with pytest.raises(ConfigError, match=message) as info:
        TalosConfig.parse(text.encode(), "tc").get_context(context)
    assert b64(pki["talos_old_client"][1])[30:70] not in str(info.value)


@pytest.mark.parametrize("field,value,message", [
    ("ca", b"", "the CA bundle of context prod is not PEM"),
    ("crt", "KEY", "the client certificate of context prod holds a ED25519 PRIVATE KEY block"),
    ("key", "CRT", "the client key of context prod must be exactly one private key PEM block"),
    ("endpoints", ("10.5.0.2", ""), "context prod: endpoints must be a list of non-empty addresses"),
    ("name", "", "a talosconfig context needs a name"),
])
def test_set_context_refuses_bad_contexts(field, value, message, pki):
    context = new_context(pki)
    value = {"KEY": context.key, "CRT": context.crt}.get(value, value) if isinstance(value, str) else value
    config = TalosConfig.parse(talosconfig_text(pki).encode(), "tc")
    before = config.to_bytes()
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.set_context(context._replace(**{field: value}))
    assert config.to_bytes() == before


# --- find_talosconfig ---------------------------------------------------------------------------------

def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("context: x\ncontexts: {}\n")
    return str(path)


@pytest.mark.parametrize("have,expected", [
    (("explicit", "env", "home"), "explicit"),
    (("env", "home"), "env"),
    (("home",), "home"),
])
def test_find_talosconfig_precedence(have, expected, tmp_path, monkeypatch):
    paths = {"explicit": tmp_path / "explicit.yaml", "env": tmp_path / "env.yaml", "home": tmp_path / "home" / ".talos" / "config"}
    for name in have:
        _touch(paths[name])
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    environ = {"HOME": str(tmp_path / "home")}
    if "env" in have:
        environ["TALOSCONFIG"] = str(paths["env"])
    explicit = str(paths["explicit"]) if "explicit" in have else None
    assert find_talosconfig(explicit, environ=environ) == str(paths[expected])


def test_find_talosconfig_uses_process_environment_by_default(tmp_path, monkeypatch):
    path = _touch(tmp_path / "from-env")
    monkeypatch.setenv("TALOSCONFIG", path)
    assert find_talosconfig() == path
    monkeypatch.delenv("TALOSCONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home_config = _touch(tmp_path / "home" / ".talos" / "config")
    assert find_talosconfig() == home_config


def test_find_talosconfig_empty_environment_value_is_unset(tmp_path):
    home_config = _touch(tmp_path / ".talos" / "config")
    assert find_talosconfig(None, environ={"TALOSCONFIG": "", "HOME": str(tmp_path)}) == home_config


@pytest.mark.parametrize("explicit,environment,message", [
    ("missing.yaml", None, r"tried .*missing\.yaml \(given explicitly\), which does not exist"),
    (None, "missing-env.yaml", r"tried .*missing-env\.yaml \(from \$TALOSCONFIG\).*Fix or unset TALOSCONFIG"),
    (None, None, r"no path given, \$TALOSCONFIG not set, and the default .*/\.talos/config does not exist"),
])
def test_find_talosconfig_reports_what_it_tried(explicit, environment, message, tmp_path):
    _touch(tmp_path / "home" / ".talos" / "config")  # present, yet an explicit or $TALOSCONFIG path is not replaced by it
    environ = {"HOME": str(tmp_path / ("home" if explicit or environment else "empty-home"))}
    if environment:
        environ["TALOSCONFIG"] = str(tmp_path / environment)
    with pytest.raises(ConfigError, match=message):
        find_talosconfig(str(tmp_path / explicit) if explicit else None, environ=environ)


# --- secrets bundle -----------------------------------------------------------------------------------

def test_secrets_bundle_reads_every_ca(pki):
    bundle = SecretsBundle.parse(secrets_text(pki).encode(), "secrets.yaml")
    assert bundle.cluster_id == "0raF93qnkMvF-FZNuvyGozXNdLiT2FOWSlyBaW4PR-w="
    assert bundle.get_ca(KIND_TALOS) == pki["talos_old"]
    assert bundle.get_ca(KIND_KUBERNETES) == pki["k8s"]
    assert bundle.get_ca(KIND_ETCD) == pki["etcd"]
    assert bundle.get_ca(KIND_AGGREGATOR) == pki["aggregator"]
    with pytest.raises(ValueError, match="unknown CA kind 'k8sserviceaccount'"):
        bundle.get_ca("k8sserviceaccount")


@pytest.mark.parametrize("kind,name,new", [(KIND_TALOS, "os", "talos_new"), (KIND_KUBERNETES, "k8s", "k8s_new")])
def test_secrets_bundle_set_ca_changes_only_its_two_lines(kind, name, new, pki):
    original = secrets_text(pki)
    bundle = SecretsBundle.parse(original.encode(), "secrets.yaml")
    old = bundle.get_ca(kind)
    assert bundle.set_ca(kind, *pki[new]) is True
    edited = bundle.to_bytes().decode()
    old_lines, new_lines = original.split("\n"), edited.split("\n")
    assert len(old_lines) == len(new_lines)
    changed = [number for number, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    start = old_lines.index("    %s:" % name)
    assert changed == [start + 1, start + 2]
    assert SecretsBundle.parse(edited.encode(), "s").get_ca(kind) == pki[new]
    assert bundle.set_ca(kind, *pki[new]) is False
    assert bundle.set_ca(kind, *old) is True
    assert bundle.to_bytes().decode() == original


def test_secrets_bundle_inserts_a_missing_ca_in_talosctl_order(pki):
    original = secrets_text(pki)
    without_etcd = re.sub(r"    etcd:\n        crt: .*\n        key: .*\n", "", original)
    bundle = SecretsBundle.parse(without_etcd.encode(), "secrets.yaml")
    with pytest.raises(ConfigError, match=r"secrets\.yaml has no certs\.etcd"):
        bundle.get_ca(KIND_ETCD)
    assert bundle.set_ca(KIND_ETCD, *pki["etcd"]) is True
    assert bundle.to_bytes().decode() == original


def test_secrets_bundle_save_backs_up_the_old_file(pki, tmp_path):
    path = tmp_path / "secrets.yaml"
    original = secrets_text(pki).encode()
    path.write_bytes(original)
    os.chmod(path, 0o644)
    bundle = SecretsBundle.load(str(path))
    bundle.set_ca(KIND_TALOS, *pki["talos_new"])
    backup = bundle.save(str(path))
    assert re.fullmatch(re.escape(str(path)) + r"\.bak-\d{8}T\d{6}Z", backup)
    assert open(backup, "rb").read() == original
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    assert path.read_bytes() == bundle.to_bytes()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # unchanged content: no second backup
    assert bundle.save(str(path)) is None
    assert sorted(os.listdir(tmp_path)) == ["secrets.yaml", os.path.basename(backup)]
    # another change in the same second gets its own backup name
    bundle.set_ca(KIND_TALOS, *pki["talos_old"])
    second = bundle.save(str(path))
    assert second not in (None, backup) and open(second, "rb").read() != original
    assert len(os.listdir(tmp_path)) == 3


def test_secrets_bundle_save_without_backup_or_previous_file(pki, tmp_path):
    bundle = SecretsBundle.parse(secrets_text(pki).encode(), "secrets.yaml")
    bundle.set_ca(KIND_TALOS, *pki["talos_new"])
    fresh = tmp_path / "new-secrets.yaml"
    assert bundle.save(str(fresh)) is None
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o600
    existing = tmp_path / "secrets.yaml"
    existing.write_bytes(secrets_text(pki).encode())
    assert bundle.save(str(existing), backup=False) is None
    assert os.listdir(tmp_path) == sorted(os.listdir(tmp_path)) and len(os.listdir(tmp_path)) == 2


@pytest.mark.parametrize("name", ["secrets.yaml", "secrets-stability.yaml"])
def test_reference_secrets_round_trip(name, pki):
    with open(reference_path(name), "rb") as handle:
        original = handle.read()
    bundle = SecretsBundle.parse(original, name)
    assert bundle.cluster_id
    assert b"ED25519 PRIVATE KEY" in bundle.get_ca(KIND_TALOS)[1]
    olds = {kind: bundle.get_ca(kind) for kind in (KIND_TALOS, KIND_KUBERNETES, KIND_ETCD, KIND_AGGREGATOR)}
    for kind, new in ((KIND_TALOS, "talos_new"), (KIND_KUBERNETES, "k8s_new"), (KIND_ETCD, "etcd"), (KIND_AGGREGATOR, "aggregator")):
        assert bundle.set_ca(kind, *pki[new]) is True
    edited = bundle.to_bytes()
    changed = [a for a, b in zip(original.split(b"\n"), edited.split(b"\n")) if a != b]
    assert len(changed) == 8 and all(line.strip().startswith((b"crt: ", b"key: ")) for line in changed)
    assert b"k8sserviceaccount:\n        key: " + original.split(b"k8sserviceaccount:\n        key: ")[1].split(b"\n")[0] in edited
    for kind, pair in olds.items():
        bundle.set_ca(kind, *pair)
    assert bundle.to_bytes() == original


BAD_BUNDLES = [
    ("malformed", lambda text: text.replace("certs:\n", "certs:\n  - x\n", 1), KIND_TALOS, r"secrets\.yaml is not valid YAML"),
    ("no-certs", lambda text: text.split("certs:\n")[0], KIND_TALOS, r"secrets\.yaml has no `certs` section: .*talosctl gen secrets"),
    ("missing-os-key", lambda text: text.rstrip("\n").rsplit("\n", 1)[0] + "\n", KIND_TALOS,
     r"secrets\.yaml: certs\.os\.key is missing or empty"),
    ("crt-not-base64", lambda text: text.replace("    os:\n        crt: LS0t", "    os:\n        crt: ??LS0t"), KIND_TALOS,
     r"certs\.os\.crt is not valid base64"),
    ("crt-raw-pem", lambda text: re.sub(r"    k8s:\n        crt: .*\n", "    k8s:\n        crt: '-----BEGIN CERTIFICATE-----'\n", text),
     KIND_KUBERNETES, r"certs\.k8s\.crt holds raw PEM, but Talos stores the base64"),
    ("certs-os-scalar", lambda text: re.sub(r"    os:\n        crt: .*\n        key: .*\n", "    os: x\n", text), KIND_TALOS,
     r"certs\.os must be a mapping"),
]


@pytest.mark.parametrize("name", [case[0] for case in BAD_BUNDLES])
def test_bad_secrets_bundles(name, pki):
    mutate, kind, message = [case[1:] for case in BAD_BUNDLES if case[0] == name][0]
    with pytest.raises(ConfigError, match=message) as info:
        SecretsBundle.parse(mutate(secrets_text(pki)).encode(), "secrets.yaml").get_ca(kind)
    assert b64(pki["talos_old"][1])[30:70] not in str(info.value)


def test_secrets_bundle_without_cluster_id(pki):
    bundle = SecretsBundle.parse(secrets_text(pki).replace("    id: 0raF93qnkMvF-FZNuvyGozXNdLiT2FOWSlyBaW4PR-w=\n", "").encode(), "s.yaml")
    with pytest.raises(ConfigError, match=r"s\.yaml has no cluster\.id"):
        assert bundle.cluster_id


def test_secrets_bundle_refuses_bad_new_ca(pki):
    bundle = SecretsBundle.parse(secrets_text(pki).encode(), "secrets.yaml")
    with pytest.raises(ConfigError, match="the new talos CA key must be exactly one private key PEM block"):
        bundle.set_ca(KIND_TALOS, pki["talos_new"][0], pki["talos_new"][0])
    assert bundle.to_bytes().decode() == secrets_text(pki)
