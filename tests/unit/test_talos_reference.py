"""The tests that compare with real Talos files fail when those files are missing, never skip (issue 13, item 8)."""

import os

import pytest

import talos_reference  # pylint: disable=import-error


def test_a_missing_reference_folder_fails_the_test_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(talos_reference.ENVIRONMENT, str(tmp_path / "absent"))
    with pytest.raises(pytest.fail.Exception) as raised:
        talos_reference.reference_path("secrets.yaml")
    assert "the Talos reference files are missing" in str(raised.value)
    assert "../shared/talos-reference" in str(raised.value) and "TALOS_REFERENCE_DIR" in str(raised.value)


def test_the_reference_folder_is_found_beside_the_checkout():
    assert os.path.isfile(talos_reference.reference_path("secrets.yaml"))
    assert os.path.isfile(talos_reference.reference_path("machineconfig-v1.15", "base-worker.yaml"))


def test_no_test_skips_when_the_reference_files_are_missing():
    tests = os.path.dirname(os.path.abspath(__file__))
    for folder, _folders, names in os.walk(os.path.dirname(tests)):
        for name in names:
            if name.endswith(".py") and name != os.path.basename(__file__):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    text = handle.read()
                assert "reference files are not present" not in text and "/work/shared" not in text, name
