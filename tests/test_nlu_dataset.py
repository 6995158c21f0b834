"""Reading training data, and the errors bad data gives (always naming file and line)."""

from pathlib import Path

import pytest

from nlu import DatasetError, Example, data_hash, load_examples
from nlu.taxonomy import INTENTS

GOOD_YAML = """\
version: "3.1"
nlu:
- intent: order_status
  examples: |
    - dónde está mi [pedido 123](order_id)
    - where is my order
- synonym: pedido
  examples: |
    - orden
- regex: order_id
  examples: |
    - \\d{5}
- lookup: city
  examples: |
    - lima
- intent: payment
  examples: |
    - quiero pagar mi [factura]{"entity": "doc"}
    - how do i pay
"""


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def assert_error_at(excinfo, path: Path, line: int):
    err = excinfo.value
    assert err.path == str(path) and err.line == line, (err.path, err.line, str(err))
    assert f"{path}:{line}" in str(err)


def test_reads_rasa_yaml_with_lines_languages_and_entities_stripped(tmp_path):
    path = write(tmp_path, "es.yml", GOOD_YAML)
    examples = load_examples([path])
    assert [(e.intent, e.text, e.line) for e in examples] == [
        ("order_status", "dónde está mi pedido 123", 5),
        ("order_status", "where is my order", 6),
        ("payment", "quiero pagar mi factura", 18),
        ("payment", "how do i pay", 19),
    ]
    assert all(e.language == "es" and e.source == str(path) for e in examples)


def test_reads_tsv_and_skips_comments_and_blank_lines(tmp_path):
    path = write(tmp_path, "extra.tsv", "# intent\ttext\n\norder_status\twhere is it\npayment\tpay now\ten\n")
    assert load_examples([path]) == [
        Example("where is it", "order_status", None, str(path), 3),
        Example("pay now", "payment", "en", str(path), 4),
    ]


def test_unknown_format_is_rejected(tmp_path):
    path = write(tmp_path, "data.csv", "order_status,where is it\n")
    with pytest.raises(DatasetError, match="unknown training data format") as excinfo:
        load_examples([path])
    assert_error_at(excinfo, path, 1)


def test_yaml_without_nlu_key_is_rejected(tmp_path):
    path = write(tmp_path, "x.yml", 'version: "3.1"\nstories: []\n')
    with pytest.raises(DatasetError, match="no 'nlu:' key") as excinfo:
        load_examples([path])
    assert_error_at(excinfo, path, 1)


def test_intent_without_examples_is_rejected(tmp_path):
    path = write(
        tmp_path,
        "x.yml",
        'version: "3.1"\nnlu:\n- intent: payment\n  examples: |\n    - pay\n- intent: order_status\n  examples: ""\n',
    )
    with pytest.raises(DatasetError, match="'order_status' has no examples") as excinfo:
        load_examples([path])
    assert_error_at(excinfo, path, 6)


def test_same_text_under_two_intents_is_rejected_naming_both_places(tmp_path):
    first = write(tmp_path, "a.tsv", "payment\tQuiero pagar\norder_status\tmi pedido\n")
    second = write(tmp_path, "b.yml", 'nlu:\n- intent: complaint\n  examples: |\n    - queja\n    - ¡quiero PAGAR!\n')
    with pytest.raises(DatasetError, match="under intent 'complaint' here and under 'payment'") as excinfo:
        load_examples([first, second])
    assert_error_at(excinfo, second, 5)
    assert f"{first}:1" in str(excinfo.value)


def test_non_utf8_file_is_rejected_at_the_offending_line(tmp_path):
    path = write(tmp_path, "x.tsv", "payment\tpagar\norder_status\tmi pedido est\xe1 tarde\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8") as excinfo:
        load_examples([path])
    assert_error_at(excinfo, path, 2)


def test_a_single_intent_overall_is_rejected(tmp_path):
    path = write(tmp_path, "x.tsv", "payment\tpagar\npayment\tpay my bill\n")
    with pytest.raises(DatasetError, match="only one intent") as excinfo:
        load_examples([path])
    assert_error_at(excinfo, path, 1)


def test_unknown_intent_is_rejected_only_when_a_taxonomy_is_enforced(tmp_path):
    path = write(tmp_path, "x.tsv", "payment\tpagar\nsmall_talk\thow are you\n")
    assert len(load_examples([path])) == 2
    with pytest.raises(DatasetError, match="unknown intent 'small_talk'") as excinfo:
        load_examples([path], taxonomy=INTENTS)
    assert_error_at(excinfo, path, 2)


def test_malformed_lines_are_rejected(tmp_path):
    tsv = write(tmp_path, "x.tsv", "payment\tpagar\njust some text\n")
    with pytest.raises(DatasetError) as excinfo:
        load_examples([tsv])
    assert_error_at(excinfo, tsv, 2)
    yml = write(tmp_path, "y.yml", "nlu:\n- intent: payment\n  examples: |\n    - pagar\n    pagar sin guion\n")
    with pytest.raises(DatasetError, match="must start with") as excinfo:
        load_examples([yml])
    assert_error_at(excinfo, yml, 5)
    broken = write(tmp_path, "z.yml", "nlu:\n- intent: payment\n  examples: [unclosed\n")
    with pytest.raises(DatasetError, match="invalid YAML"):
        load_examples([broken])


def test_data_hash_ignores_order_and_location_but_not_content(tmp_path):
    a = [Example("hola", "x", "es", "a.yml", 1), Example("pagar", "payment", "es", "a.yml", 2)]
    b = [Example("pagar", "payment", "es", "b.tsv", 9), Example("hola", "x", "es", "b.tsv", 3)]
    assert data_hash(a) == data_hash(b)
    assert data_hash(a) != data_hash([a[0], Example("pagar", "complaint", "es", "a.yml", 2)])
