"""Output planning and writing of the CLI (dcomp/cli_outputs.py), in-process."""
from __future__ import annotations

import os

import pytest

from dcomp.cli_outputs import UsageError, check_writable, plan_outputs, write_output
from dcomp.errors import DcompError


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_beside_each_input_by_default():
    assert plan_outputs(["a/x.png", "b.png"], None, ".dcz").targets == ["a/x.dcz", "b.dcz"]
    assert plan_outputs(["-"], None, ".dcz").targets == ["-"]


def test_trailing_slash_names_a_folder_even_for_one_input(tmp_path):
    plan = plan_outputs(["x.dcz"], "new/", ".png")
    assert plan.targets == ["new/x.png"] and plan.folder is not None
    assert not (tmp_path / "new").exists()  # made only when a file is written into it


def test_several_inputs_make_o_a_folder():
    plan = plan_outputs(["a.png", "b.png"], "out", ".dcz")
    assert plan.targets == ["out/a.dcz", "out/b.dcz"]


def test_several_inputs_refuse_an_existing_file_as_folder(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(UsageError, match="folder"):
        plan_outputs(["a.png", "b.png"], "out", ".dcz")


def test_two_inputs_to_one_output_are_refused():
    with pytest.raises(UsageError, match="a/x.png and b/x.png would both be written to out/x.dcz"):
        plan_outputs(["a/x.png", "b/x.png"], "out/", ".dcz")


def test_output_over_its_own_input_is_refused():
    with pytest.raises(UsageError, match="is an input"):
        plan_outputs(["x.dcz"], "x.dcz", ".png")
    with pytest.raises(UsageError, match="is an input"):
        plan_outputs(["x.png", "x.dcz"], None, ".png")  # x.dcz's output would be the first input


def test_stdin_only_once():
    with pytest.raises(UsageError):
        plan_outputs(["-", "-"], "out/", ".dcz")


def test_write_never_replaces_without_force(tmp_path):
    (tmp_path / "a.dcz").write_bytes(b"precious")
    with pytest.raises(DcompError, match="exists"):
        check_writable("a.dcz", force=False, create_folder=False)
    with pytest.raises(DcompError, match="exists"):  # the race: it appeared after the check
        write_output("a.dcz", b"new", force=False, create_folder=False)
    assert (tmp_path / "a.dcz").read_bytes() == b"precious"
    write_output("a.dcz", b"new", force=True, create_folder=False)
    assert (tmp_path / "a.dcz").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["a.dcz"]  # no temporary file left


def test_folder_is_created_on_write_and_only_then(tmp_path):
    check_writable("deep/er/x.dcz", force=False, create_folder=True)
    assert not (tmp_path / "deep").exists()
    write_output("deep/er/x.dcz", b"data", force=False, create_folder=True)
    assert (tmp_path / "deep" / "er" / "x.dcz").read_bytes() == b"data"


def test_missing_folder_of_a_named_file_is_an_error(tmp_path):
    with pytest.raises(DcompError, match="does not exist"):
        check_writable("nodir/x.dcz", force=False, create_folder=False)
