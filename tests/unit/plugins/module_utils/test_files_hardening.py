"""Files the collection writes: links written through, folders it did not create left as they are (issue 13, items 2, 3)."""

import os
import stat
import subprocess

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _files, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_lock
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError, TalosPKIError


def mode(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


# --- item 2: a symbolic link is written through ----------------------------------------------------------------------


@pytest.mark.parametrize("relative", [True, False], ids=["relative-link", "absolute-link"])
def test_a_link_is_written_through_and_stays_a_link(tmp_path, relative):
    (tmp_path / "dotfiles").mkdir()
    target = tmp_path / "dotfiles" / "config"
    target.write_bytes(b"old credentials\n")
    os.chmod(target, 0o640)
    (tmp_path / "home").mkdir()
    link = tmp_path / "home" / "config"
    os.symlink(os.path.relpath(target, link.parent) if relative else str(target), str(link))

    assert _files.atomic_write(str(link), b"new credentials\n") == str(link)

    assert os.path.islink(link), "the link was replaced by a regular file"
    assert target.read_bytes() == b"new credentials\n"
    assert mode(target) == 0o640, "the target's mode was not kept"
    assert os.stat(target).st_uid == os.geteuid()
    # The temp file went beside the target (same filesystem, atomic rename), and nothing is left behind.
    assert sorted(os.listdir(tmp_path / "dotfiles")) == ["config"]
    assert sorted(os.listdir(tmp_path / "home")) == ["config"]


def test_a_chain_of_links_is_written_through_to_the_last_target(tmp_path):
    target = tmp_path / "real"
    target.write_bytes(b"old")
    os.symlink("real", str(tmp_path / "middle"))
    os.symlink("middle", str(tmp_path / "first"))
    _files.atomic_write(str(tmp_path / "first"), b"new")
    assert os.path.islink(tmp_path / "first") and os.path.islink(tmp_path / "middle")
    assert target.read_bytes() == b"new"


def test_a_dangling_link_creates_its_target_private(tmp_path):
    os.symlink("secrets.yaml", str(tmp_path / "link"))
    _files.atomic_write(str(tmp_path / "link"), b"bundle")
    assert os.path.islink(tmp_path / "link")
    assert (tmp_path / "secrets.yaml").read_bytes() == b"bundle" and mode(tmp_path / "secrets.yaml") == 0o600


@pytest.mark.parametrize("make", ["directory", "missing-folder"])
def test_a_link_that_cannot_be_written_through_is_refused_before_any_change(tmp_path, make):
    if make == "directory":
        (tmp_path / "folder").mkdir()
        os.symlink("folder", str(tmp_path / "link"))
        expected = "is a symbolic link to the directory"
    else:
        os.symlink("gone/config", str(tmp_path / "link"))
        expected = "whose folder does not exist"
    with pytest.raises(ConfigError, match=expected) as raised:
        _files.atomic_write(str(tmp_path / "link"), b"data")
    assert "Nothing was written" in str(raised.value)
    assert os.path.islink(tmp_path / "link")


def test_a_backup_of_a_link_goes_beside_the_link_and_leaves_it_a_link(tmp_path):
    target = tmp_path / "real"
    target.write_bytes(b"old")
    os.symlink("real", str(tmp_path / "link"))
    backup = _files.write_backup(str(tmp_path / "link"), b"old")
    assert os.path.dirname(backup) == str(tmp_path) and os.path.basename(backup).startswith("link.bak-")
    assert not os.path.islink(backup) and mode(backup) == 0o600
    assert os.path.islink(tmp_path / "link") and target.read_bytes() == b"old"


# --- item 3: folders ----------------------------------------------------------------------------------------------------


def test_parents_made_under_umask_000_are_private(tmp_path):
    previous = os.umask(0)
    try:
        _files.ensure_private_dir(str(tmp_path / "a" / "b" / "c"))
    finally:
        os.umask(previous)
    for folder in ("a", "a/b", "a/b/c"):
        assert mode(tmp_path / folder) == 0o700, folder


def test_an_existing_folder_keeps_its_mode(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    _files.ensure_private_dir(str(shared / "inner"))
    assert mode(shared) == 0o1777, "the collection changed the mode of a folder it did not create"
    assert mode(shared / "inner") == 0o700
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o755)
    _files.ensure_private_dir(str(home))
    assert mode(home) == 0o755


FOLDER_CONTENTS = [[], ["rotation.lock", "rotation.appliers"],
                   ["talos", "kubernetes", "aggregator", "service_account", "talos.archived-20260101T000000Z",
                    "aggregator.archived-20260101T000000Z", "service_account.archived-20260101T000000Z"],
                   [".kubernetes.staging-abc123", ".service_account.staging-abc123"],
                   ["talos.rolled-back-20260101T000000Z", "kubernetes.rolled-back-20260102T000000Z"]]


@pytest.mark.parametrize("entries", FOLDER_CONTENTS, ids=["empty", "lock", "rotations", "staging", "rolled-back"])
def test_a_new_empty_or_rotation_folder_is_accepted(tmp_path, entries):
    folder = tmp_path / "rotation"
    folder.mkdir(mode=0o700)
    for name in entries:
        (folder / name).mkdir()
    _rotation_store.check_rotation_folder(str(folder))
    _rotation_store.check_rotation_folder(str(tmp_path / "new"))


def test_a_folder_with_other_files_is_refused(tmp_path):
    folder = tmp_path / "tmp"
    folder.mkdir(mode=0o700)
    for name in ("x11-unix", "notes.txt", "talos"):
        (folder / name).write_text("someone else's\n")
    with pytest.raises(RotationStateError, match=r"holds files that are not a rotation's \(notes.txt, x11-unix\): it is not a "
                                                 r"rotation folder of this collection") as raised:
        _rotation_store.check_rotation_folder(str(folder))
    assert "Set rotate_ca_dir to a new or empty folder" in str(raised.value)


def test_a_folder_others_can_write_is_refused_and_keeps_its_mode(tmp_path):
    folder = tmp_path / "sticky"
    folder.mkdir()
    os.chmod(folder, 0o1777)
    with pytest.raises(RotationStateError, match="mode 1777, owner uid .* can be written by other users"):
        _rotation_store.check_rotation_folder(str(folder))
    assert mode(folder) == 0o1777


@pytest.fixture(name="playbook")
def fixture_playbook(monkeypatch):
    process = subprocess.Popen(["sleep", "300"])  # pylint: disable=consider-using-with
    monkeypatch.setattr(rotation_lock, "owner_pid", lambda: process.pid)
    yield process
    process.kill()
    process.wait()


@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check"])
def test_the_lock_refuses_a_foreign_folder_and_writes_nothing(tmp_path, playbook, check_mode):
    del playbook
    folder = tmp_path / "tmp"
    folder.mkdir()
    os.chmod(folder, 0o1777)
    (folder / ".X11-unix").mkdir()
    with pytest.raises(TalosPKIError, match="it is not a rotation folder of this collection"):
        rotation_lock.run({"path": str(folder), "wait": 0.0}, check_mode=check_mode)
    assert sorted(os.listdir(folder)) == [".X11-unix"] and mode(folder) == 0o1777


def test_the_lock_makes_missing_parents_private_under_umask_000(tmp_path, playbook):
    del playbook
    previous = os.umask(0)
    try:
        rotation_lock.run({"path": str(tmp_path / "new" / "rotation"), "wait": 0.0})
    finally:
        os.umask(previous)
    assert mode(tmp_path / "new") == 0o700 and mode(tmp_path / "new" / "rotation") == 0o700


# --- files written at the end of a rotation: checked before any change ------------------------------------------------


def test_a_writable_file_or_link_has_no_problem(tmp_path):
    (tmp_path / "real").write_text("x")
    os.symlink("real", str(tmp_path / "link"))
    assert _files.write_problem(str(tmp_path / "link"), "talosconfig") is None
    assert _files.write_problem(str(tmp_path / "real"), "talosconfig") is None
    assert _files.write_problem(str(tmp_path / "new" / "kubeconfig"), "kubeconfig") is None  # its folder is made then


def test_a_link_to_a_folder_is_a_problem(tmp_path):
    (tmp_path / "folder").mkdir()
    os.symlink("folder", str(tmp_path / "link"))
    assert _files.write_problem(str(tmp_path / "link"), "secrets bundle").startswith("secrets bundle: %s is a symbolic link to "
                                                                                     "the directory" % (tmp_path / "link"))


def test_a_folder_this_user_cannot_write_is_a_problem(tmp_path, monkeypatch):
    (tmp_path / "config").write_text("x")
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(tmp_path))  # as a user without write access there
    problem = _files.write_problem(str(tmp_path / "config"), "talosconfig")
    assert "talosconfig %s cannot be written: this user may not create files in its folder" % (tmp_path / "config") in problem


def test_a_link_target_of_another_owner_is_a_problem_for_a_user_who_cannot_keep_it(tmp_path, monkeypatch):
    (tmp_path / "real").write_text("x")
    os.symlink("real", str(tmp_path / "link"))
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(tmp_path / "real").st_uid + 1)  # not root, not the owner
    problem = _files.write_problem(str(tmp_path / "link"), "kubeconfig")
    assert "is a symbolic link to %s, owned by uid" % (tmp_path / "real") in problem and "Run as that user" in problem


def test_the_preflight_refuses_a_file_it_could_not_write_at_the_end(tmp_path):
    from ansible_collections.talosops.pki.plugins.module_utils._backends import cluster_info  # pylint: disable=import-outside-toplevel

    class UserTarget:  # pylint: disable=too-few-public-methods
        talosconfig_path = str(tmp_path / "talosconfig")

    (tmp_path / "folder").mkdir()
    os.symlink("folder", str(tmp_path / "talosconfig"))
    params = {"secrets_file": None, "kubeconfig": None, "rotation_dirs": {"talos": str(tmp_path / "rotation" / "talos")}}
    with pytest.raises(ConfigError, match="files the rotation updates at its end cannot be written, so nothing was changed: "
                                          "talosconfig: .* is a symbolic link to the directory"):
        cluster_info._check_writable(params, UserTarget())  # pylint: disable=protected-access
    # The Kubernetes flow does not write the talosconfig.
    cluster_info._check_writable(dict(params, rotation_dirs={"kubernetes": "x"}), UserTarget())  # pylint: disable=protected-access
