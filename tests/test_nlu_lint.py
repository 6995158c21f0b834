"""The training-data linter finds each kind of problem and points at the line."""

from pathlib import Path

from nlu import bundled_data_paths
from nlu.lint import guess_language, has_errors, lint


def write(path: Path, intents: dict[str, list[str]]) -> Path:
    lines = ['version: "3.1"', "nlu:"]
    for intent, examples in intents.items():
        lines += [f"- intent: {intent}", "  examples: |"] + [f"    - {e}" for e in examples]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def kinds(findings):
    return sorted({f.kind for f in findings})


def test_the_bundled_data_is_clean():
    assert lint(bundled_data_paths()) == []


def test_duplicate_conflict_thin_and_language(tmp_path):
    es = write(tmp_path / "es.yml", {
        "payment": ["quiero pagar mi factura", "Quiero pagar mi factura!", "como pago el recibo"],
        "order_status": ["donde esta mi pedido", "como pago el recibo", "where is my order please"],
    })
    findings = lint([es], min_per_language=4)
    by_kind = {f.kind: f for f in findings}
    assert kinds(findings) == ["conflict", "duplicate", "language", "thin"]
    assert by_kind["duplicate"].line == 6 and by_kind["duplicate"].path == str(es)
    assert by_kind["conflict"].line == 11 and "'payment'" in by_kind["conflict"].message
    assert by_kind["language"].line == 12 and by_kind["language"].severity == "warning"
    assert "'en'" in by_kind["language"].message
    assert has_errors(findings)


def test_thin_intent_per_language(tmp_path):
    es = write(tmp_path / "es.yml", {"payment": ["quiero pagar", "pagar factura"], "order_status": ["mi pedido"]})
    en = write(tmp_path / "en.yml", {"payment": ["i want to pay", "pay my bill"], "order_status": ["my order", "track it"]})
    thin = [f for f in lint([es, en], min_per_language=2) if f.kind == "thin"]
    assert len(thin) == 1 and "'order_status' has 1 example(s) in language 'es'" in thin[0].message
    assert thin[0].path == str(es)


def test_format_errors_are_findings_with_file_and_line(tmp_path):
    bad = tmp_path / "data.yml"
    bad.write_text('version: "3.1"\nnlu:\n- intent: payment\n  examples: |\n    quiero pagar\n', encoding="utf-8")
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("payment\tcómo pago\n".encode("latin-1"))
    findings = lint([bad, latin, tmp_path / "x.csv"])
    fmt = [f for f in findings if f.kind == "format"]
    assert [(Path(f.path).name, f.line) for f in fmt] == [("data.yml", 5), ("latin.tsv", 1), ("x.csv", 1)]
    assert "UTF-8" in fmt[1].message


def test_a_clean_file_passes(tmp_path):
    es = write(tmp_path / "es.yml", {"payment": ["quiero pagar mi factura"], "order_status": ["donde esta mi pedido"]})
    assert lint([es], min_per_language=1) == []


def test_language_guess():
    assert guess_language("where is my order please") == "en"
    assert guess_language("quiero saber donde esta mi pedido") == "es"
    assert guess_language("ok") is None
