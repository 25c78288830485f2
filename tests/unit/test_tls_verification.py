"""Static check: no code path of the collection switches TLS verification off.

Scans everything the collection ships that can open a connection (plugins/, roles/, playbooks/) for the ways Python,
the kubernetes client, urllib3 and Ansible spell "do not verify", and requires the two places that build TLS settings
to keep verification on. A new file or a rewrite that weakens verification fails here, in CI's unit stage.
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCANNED = ("plugins", "roles", "playbooks")

WEAKENING = {
    "ssl.CERT_NONE / CERT_OPTIONAL": re.compile(r"\bCERT_(NONE|OPTIONAL)\b"),
    "check_hostname off": re.compile(r"check_hostname\s*=\s*(False|0)\b"),
    "unverified SSL context": re.compile(r"_create_unverified_context|_create_default_https_context"),
    "kubernetes client verify_ssl off": re.compile(r"verify_ssl\s*=\s*(False|0)\b"),
    "insecure-skip-tls-verify": re.compile(r"insecure[-_]skip[-_]tls[-_]verify\s*[:=]\s*(true|True|yes|1)\b"),
    "requests verify=False": re.compile(r"\bverify\s*=\s*False\b"),
    "urllib3 warnings silenced": re.compile(r"disable_warnings\s*\("),
    "Ansible validate_certs off": re.compile(r"validate_certs\s*[:=]\s*(false|False|no|0)\b"),
    "assert_hostname off": re.compile(r"assert_hostname\s*=\s*False\b"),
}

# Where TLS settings are built, and what each must say.
REQUIRED = {
    os.path.join("plugins", "module_utils", "_client.py"): ["context.verify_mode = ssl.CERT_REQUIRED", "context.check_hostname = True"],
    os.path.join("plugins", "module_utils", "_kubernetes.py"): ["context.verify_mode = ssl.CERT_REQUIRED", "context.check_hostname = True",
                                                                "cert_reqs=ssl.CERT_REQUIRED, ssl_context=context"],
}


def shipped_files():
    for top in SCANNED:
        for folder, _folders, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if name.endswith((".py", ".yml", ".yaml", ".j2")):
                    yield os.path.join(folder, name)


def weakenings(text):
    """(what, line number) for each way of switching verification off found in text."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in WEAKENING.items():
            if pattern.search(line):
                found.append((what, number))
    return found


def test_the_scan_covers_the_collection():
    files = list(shipped_files())
    assert len(files) > 40
    assert os.path.join(ROOT, "plugins", "module_utils", "_client.py") in files


@pytest.mark.parametrize("sample,what", [
    ("context.verify_mode = ssl.CERT_NONE", "ssl.CERT_NONE / CERT_OPTIONAL"),
    ("ctx.check_hostname = False", "check_hostname off"),
    ("ssl._create_unverified_context()", "unverified SSL context"),
    ("configuration.verify_ssl = False", "kubernetes client verify_ssl off"),
    ("    insecure-skip-tls-verify: true", "insecure-skip-tls-verify"),
    ("requests.get(url, verify=False)", "requests verify=False"),
    ("urllib3.disable_warnings()", "urllib3 warnings silenced"),
    ("    validate_certs: false", "Ansible validate_certs off"),
])
def test_each_weakening_is_recognised(sample, what):
    assert weakenings(sample) == [(what, 1)]


def test_no_shipped_file_switches_tls_verification_off():
    found = []
    for path in shipped_files():
        with open(path, encoding="utf-8") as handle:
            found.extend("%s:%d %s" % (os.path.relpath(path, ROOT), number, what) for what, number in weakenings(handle.read()))
    assert not found, "TLS verification switched off: %s" % "; ".join(found)


@pytest.mark.parametrize("relative,statements", sorted(REQUIRED.items()))
def test_tls_settings_keep_verification_on(relative, statements):
    with open(os.path.join(ROOT, relative), encoding="utf-8") as handle:
        text = handle.read()
    for statement in statements:
        assert statement in text, "%s no longer says %r" % (relative, statement)
