"""capsacc.files: located read errors, strict JSON, atomic writes, output checks."""

import os

import pytest

from capsacc.errors import InputError
from capsacc.files import (MAX_JSON_DEPTH, atomic_path, prepare_output_dir, prepare_output_file, read_json,
                           read_text, write_atomic)


def test_read_json_names_the_file_for_bad_utf8(tmp_path):
    path = tmp_path / "b.json"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(InputError, match=r"b\.json: not UTF-8 text \(byte 0: 0xff\)"):
        read_json(path)


@pytest.mark.parametrize("text", ["[NaN]", "[Infinity]", "[-Infinity]", "[1e999]"])
def test_read_json_refuses_non_finite_numbers(tmp_path, text):
    path = tmp_path / "n.json"
    path.write_text(text)
    with pytest.raises(InputError, match="n.json: "):
        read_json(path)


def test_read_json_refuses_deep_nesting_without_recursion_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 3000 + "]" * 3000)
    with pytest.raises(InputError, match=f"nested 3000 deep, more than the limit of {MAX_JSON_DEPTH}"):
        read_json(path)


def test_read_json_ignores_brackets_in_strings(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"a": "' + "[" * 500 + '"}')
    assert read_json(path) == {"a": "[" * 500}


def test_read_text_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="pipe: not a regular file"):
        read_text(fifo)


def test_read_text_refuses_files_over_the_limit(tmp_path):
    path = tmp_path / "big"
    path.write_text("x" * 100)
    with pytest.raises(InputError, match="100 bytes, larger than the 10-byte limit"):
        read_text(path, max_bytes=10)


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")
    write_atomic(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["r.json"]


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.csv"]


def test_prepare_output_dir_refuses_a_file_and_creates_parents(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="cannot create output folder"):
        prepare_output_dir(tmp_path / "f" / "sub")
    with pytest.raises(InputError, match="output folder is an existing file"):
        prepare_output_dir(tmp_path / "f")
    assert prepare_output_dir(tmp_path / "a" / "b").is_dir()


def test_prepare_output_file_refuses_a_folder(tmp_path):
    with pytest.raises(InputError, match="output file is an existing folder"):
        prepare_output_file(tmp_path)
    assert prepare_output_file(tmp_path / "x" / "m.keras").parent.is_dir()


def test_atomic_writes_refuse_to_replace_a_device(tmp_path):
    with pytest.raises(InputError, match="/dev/null: output file exists and is not a regular file"):
        write_atomic("/dev/null", "x")
    with pytest.raises(InputError, match="not a regular file"):
        prepare_output_file("/dev/null")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
