"""One rotation per cluster: the rotation marker in a CA, and who blocks or wins."""

import os

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _claim, _pki, _rotation


def marked_ca(previous, created, kind="talos"):
    marker = dict(_claim.new_marker(previous), created=created)
    return _claim.marked(_pki.generate_ca(kind, marker=marker).crt)


@pytest.mark.parametrize("kind", ["talos", "kubernetes"])
def test_marker_round_trips_and_keeps_talos_parameters(kind):
    marker = _claim.new_marker("ab" * 32)
    ca = _pki.generate_ca(kind, marker=marker)
    facts = _pki.describe_certificate(ca.crt)
    assert _pki.rotation_marker(ca.crt) == marker and facts["rotation_marker"] == marker
    # Still the CA Talos makes: same subject, a CA for both purposes; the marker adds no secret.
    assert facts["subject"] == "O=%s" % kind and facts["is_ca"] and facts["extended_key_usage"] == ["server_auth", "client_auth"]
    _pki.validate_ca(ca.crt, ca.key)
    assert set(marker) == {"id", "previous", "created", "host"}


def test_marker_oid_is_one_go_can_parse():
    # Go's x509 (Talos, trustd, kube-apiserver, kubectl) refuses a whole certificate whose extension OID has an arc
    # that does not fit in an int ("malformed extension OID field"), e.g. a UUID OID 2.25.<128 bits>.
    assert all(int(arc) < 2 ** 31 for arc in _pki.ROTATION_MARKER_OID.split("."))


def test_another_tools_comment_is_not_a_marker():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    ca = _pki.load_certificate(_pki.generate_ca("kubernetes").crt)
    key = ec.generate_private_key(ec.SECP256R1())
    comment = b"\x16\x1bOpenSSL Generated Certificate"
    builder = x509.CertificateBuilder(ca.issuer, ca.subject, key.public_key(), 1, ca.not_valid_before_utc, ca.not_valid_after_utc)
    builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(_pki.ROTATION_MARKER_OID), comment), critical=False)
    crt = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    assert _pki.rotation_marker(crt) is None


def test_a_ca_without_marker_is_not_marked():
    assert _claim.marked(_pki.generate_ca("talos").crt) is None
    assert _pki.describe_certificate(_pki.generate_ca("kubernetes").crt)["rotation_marker"] is None


def test_long_marker_values_round_trip():
    marker = dict(_claim.new_marker("cd" * 32), host="h" * 300)
    assert _pki.rotation_marker(_pki.generate_ca("talos", marker=marker).crt) == marker


def test_the_first_created_wins_and_both_sides_agree():
    early, late = marked_ca("p" * 64, "2026-01-01T00:00:00.000001Z"), marked_ca("p" * 64, "2026-01-01T00:00:00.000002Z")
    assert _claim.wins(early, late) and not _claim.wins(late, early)
    assert _claim.rivals([early, late], late, "p" * 64) == ([early], [])
    assert _claim.rivals([early, late], early, "p" * 64) == ([], [late])


def test_blocking_rotations():
    old = "o" * 64
    other = marked_ca(old, "2026-01-01T00:00:00.000001Z")
    mine = marked_ca(old, "2026-01-01T00:00:00.000002Z")
    # A fresh run: another rotation of the cluster's CA is in progress while its previous CA is held.
    assert _claim.blocking([other], held={old, other.fingerprint}, issuing={old}) == [other]
    # Over: nothing holds the CA it replaced.
    assert _claim.blocking([other], held={other.fingerprint}, issuing={other.fingerprint}) == []
    # A run whose own rotation started later lost; the earlier one is not blocked by the later one's leftovers.
    held = {old, other.fingerprint, mine.fingerprint}
    assert _claim.blocking([other, mine], held, {old}, mine, old) == [other]
    assert _claim.blocking([other, mine], held, {old}, other, old) == []
    # An abandoned rotation (issuing nowhere) is let through only when strays are to be removed.
    assert _claim.blocking([other], {old, other.fingerprint}, {old}, remove_strays=True) == []
    assert _claim.blocking([other], {old, other.fingerprint}, {other.fingerprint}, remove_strays=True) == [other]


def test_without_takes_a_ca_out_of_the_accepted_only():
    assert _claim.without(_rotation.NodeCAs("a", ("b", "c")), "b") == _rotation.NodeCAs("a", ("c",))
    assert _claim.without(_rotation.NodeCAs("a", ("b",)), "a") == _rotation.NodeCAs("a", ("b",))


def test_two_archives_in_the_same_second_do_not_collide(tmp_path):
    from ansible_collections.talosops.pki.plugins.module_utils import _rotation_store
    targets = []
    for number in range(3):
        (tmp_path / "talos").mkdir()
        (tmp_path / "talos" / "marker").write_text(str(number))
        targets.append(_rotation_store.archive(str(tmp_path / "talos"), _rotation_store.WITHDRAWN_SUFFIX))
    assert len(set(targets)) == 3 and all((tmp_path / target).is_dir() for target in targets)
    assert all(os.path.basename(target).startswith("talos.withdrawn-") for target in targets)
    assert sorted((tmp_path / target / "marker").read_text() for target in targets) == ["0", "1", "2"]
