"""lorita.runs.output_file: a file a script writes is checked before any work, so that nothing is lost."""

import json
import os

import pytest

from lorita.errors import LoritaError
from lorita.runs.output_file import PNG_SIGNATURE, check_distinct, check_output_file, is_png, json_with


def test_a_new_file_in_an_existing_folder_and_a_file_of_its_own_kind_are_taken(tmp_path):
    new = tmp_path / "summary.json"
    assert check_output_file(new, "--out", own=json_with("studies")) == new
    new.write_text(json.dumps({"studies": []}))
    assert check_output_file(new, "--out", own=json_with("studies")) == new
    plot = tmp_path / "curve.png"
    plot.write_bytes(PNG_SIGNATURE + b"rest")
    assert check_output_file(plot, "--plot", own=is_png) == plot


@pytest.mark.parametrize("content, own, kind", [
    ('{"recipe": {}, "runs": []}', json_with("studies"), "a JSON object with 'studies'"),
    ('{"studies": [{"per_seed": []}]}', json_with("studies", "fixed_size_differences"),
     "a JSON object with 'studies', each entry with 'fixed_size_differences'"),
    ("not json", json_with("choices"), "a JSON object with 'choices'"),
    ("my notes", is_png, "a PNG image")])
def test_an_existing_file_of_another_kind_is_kept(tmp_path, content, own, kind):
    path = tmp_path / "x"
    path.write_text(content)
    with pytest.raises(LoritaError, match=f"--out {path} exists and is not {kind}, what this script writes there"):
        check_output_file(path, "--out", own=own)
    assert path.read_text() == content


def test_an_input_or_a_path_inside_one_is_refused(tmp_path):
    run = tmp_path / "fcn-e60" / "base" / "seed0"
    run.mkdir(parents=True)
    (run / "results.json").write_text("{}")
    for path in (run / "results.json", run / "summary.json"):
        with pytest.raises(LoritaError, match="is, or sits inside, an input of this script"):
            check_output_file(path, "--out", inputs=[run])
    config = tmp_path / "config.json"
    config.write_text("{}")
    with pytest.raises(LoritaError, match="an input of this script"):
        check_output_file(config, "--json", inputs=[run, config])


def test_a_folder_a_link_a_fifo_or_a_missing_folder_above_is_refused(tmp_path):
    (tmp_path / "target").write_text("kept")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    os.mkfifo(tmp_path / "fifo")
    cases = {tmp_path: "is a folder", tmp_path / "link": "is a link", tmp_path / "fifo": "is not a regular file",
             tmp_path / "no" / "x.json": f"no folder {tmp_path / 'no'}; create it first"}
    for path, message in cases.items():
        with pytest.raises(LoritaError, match=message):
            check_output_file(path, "--out")
    assert not (tmp_path / "no").exists() and (tmp_path / "target").read_text() == "kept"


def test_two_outputs_at_one_path_are_refused(tmp_path):
    check_distinct({"--out": tmp_path / "a.json", "--plot": None, "--fixed-sizes": tmp_path / "b.json"})
    with pytest.raises(LoritaError, match="--out and --fixed-sizes are the same file"):
        check_distinct({"--out": tmp_path / "a.json", "--fixed-sizes": tmp_path / "." / "a.json"})
