"""Text as the recogniser writes it: one reading for accents, seseo, b/v, numbers and fillers."""

import numpy as np
import pytest

from nlu import IntentModel
from nlu.dataset import Example
from nlu.features import FeatureConfig
from nlu.model import ModelLoadError
from nlu.spelling import Lexicon, spelling_key
from nlu.text import NUMBER_TOKEN, normalize
from nlu.train import save, train


@pytest.mark.parametrize("variants", [
    ("póliza", "poliza", "polisa", "POLIZA"),  # accents, seseo
    ("vigente", "bigente", "vijente"),  # b/v, g/j before e/i
    ("llamada", "yamada"),  # yeísmo
    ("cancelación", "canselacion", "cancelasion"),
    ("dirección", "direccion", "direción"),
    ("acceso", "aseso", "accesso"),  # doubled letters
])
def test_spelling_variants_of_a_word_share_one_key(variants):
    assert len({spelling_key(v) for v in variants}) == 1


@pytest.mark.parametrize("a, b", [("pedido", "penimos"), ("casa", "cosa"), ("pago", "paso"), ("cita", "cinta")])
def test_different_words_keep_different_keys(a, b):
    assert spelling_key(a) != spelling_key(b)


@pytest.mark.parametrize("text, expected", [
    ("Tengo DOS facturas", f"tengo {NUMBER_TOKEN} facturas"),
    ("tengo 2 facturas", f"tengo {NUMBER_TOKEN} facturas"),
    ("mi pedido es el 4 5 6 7", f"mi pedido es el {NUMBER_TOKEN}"),
    ("treinta y dos pesos", f"{NUMBER_TOKEN} pesos"),
    ("one hundred and five dollars", f"one {NUMBER_TOKEN} dollars"),  # "one" is mostly an article
    ("quiero una cita", "quiero una cita"),
    ("¿Dónde está mi pedido?", "donde esta mi pedido"),
    ("pan y queso", "pan y queso"),  # "y" joins numbers only
])
def test_numbers_read_the_same_as_digits_or_words(text, expected):
    assert normalize(text) == expected


def test_accents_can_be_kept_for_the_embedding():
    assert normalize("¿Está mi PÓLIZA?", keep_accents=True) == "está mi póliza"
    assert normalize("¿Está mi PÓLIZA?") == "esta mi poliza"


def test_the_lexicon_writes_each_word_as_training_wrote_it_most():
    lexicon = Lexicon.from_texts(["mi póliza", "la póliza vence", "una poliza nueva", "me llamo ana"])
    assert lexicon.canonical("eh mi POLISA, mi poliza") == "mi póliza mi póliza"
    assert lexicon.canonical("yamo por la poliza") == "llamo por la póliza"
    assert lexicon.canonical("un siniestro") == "un siniestro"  # unknown words stay as written


def test_a_tie_goes_to_the_accented_form():
    assert Lexicon.from_texts(["poliza", "póliza"]).canonical("polisa") == "póliza"


def test_the_lexicon_round_trips_through_arrays():
    lexicon = Lexicon.from_texts(["quiero mi póliza", "dónde está"])
    arrays = lexicon.to_arrays()
    again = Lexicon.from_arrays(arrays["lexicon_keys"], arrays["lexicon_forms"])
    assert again.canonical("polisa donde esta") == lexicon.canonical("polisa donde esta") == "póliza dónde está"
    with pytest.raises(ValueError):
        Lexicon.from_arrays(arrays["lexicon_keys"], arrays["lexicon_forms"][:1])


def _toy_examples() -> list[Example]:
    rows = {
        "policy_info": ["quiero saber si mi póliza sigue vigente", "qué cubre mi póliza", "la póliza cubre el robo",
                        "cuándo vence mi póliza", "necesito el número de póliza"],
        "order_status": ["dónde está mi pedido", "mi pedido no llegó", "el pedido viene tarde",
                         "cuándo llega mi pedido", "quiero rastrear el pedido"],
    }
    return [Example(t, intent, "es", "toy.yml", i + 1) for intent, texts in rows.items() for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def toy_models(tmp_path_factory):
    examples = _toy_examples()
    folded = train(examples, holdout=0, features=FeatureConfig(embedding=None))
    written = train(examples, holdout=0, features=FeatureConfig(embedding=None, spelling=False))
    return folded, written


def test_a_model_that_folds_spelling_reads_misspellings_as_the_training_words(toy_models):
    folded, _ = toy_models
    model = folded.to_intent_model()
    probs = [model.probabilities(t) for t in ("quiero saber si mi póliza sigue vigente",
                                              "quiero saber si mi poliza sigue vigente",
                                              "kiero saber si mi polisa sige bigente")]
    np.testing.assert_allclose(probs[0], probs[1])
    assert model.reading("mi polisa") == "mi póliza"
    assert model.parse("kiero saber si mi polisa sige bigente").intent == "policy_info"


def test_the_lexicon_is_saved_with_the_model_and_required_to_load_it(toy_models, tmp_path):
    folded, written = toy_models
    loaded = IntentModel.load(save(folded, tmp_path / "folded"))
    assert loaded.reading("polisa") == "póliza"
    assert IntentModel.load(save(written, tmp_path / "written")).reading("polisa") == "polisa"

    import numpy as np_

    weights = tmp_path / "folded" / "weights.npz"
    with np_.load(weights) as npz:
        kept = {k: npz[k] for k in npz.files if not k.startswith("lexicon_")}
    np_.savez(weights, **kept)
    with pytest.raises(ModelLoadError, match="lexicon_keys"):
        IntentModel.load(tmp_path / "folded")


def test_asr_transcripts_teach_the_final_model_what_the_line_does_to_words():
    examples = _toy_examples()
    heard = [Example("donde esta mi penimos", "order_status", "es", "asr.tsv", 1),
             Example("mi penimos no llego", "order_status", "es", "asr.tsv", 2),
             Example("dónde está mi pedido", "order_status", "es", "asr.tsv", 3)]  # same as a written one: dropped
    plain = train(examples, holdout=0, features=FeatureConfig(embedding=None)).to_intent_model()
    mixed = train(examples, holdout=0, features=FeatureConfig(embedding=None), augmented=heard)
    assert mixed.metadata["augmented"]["n"] == 2
    assert "w:penimos" not in plain.featurizer.vocabulary
    assert "w:penimos" in mixed.featurizer.vocabulary
    assert mixed.to_intent_model().probabilities("penimos")[mixed.labels.index("order_status")] > \
        plain.probabilities("penimos")[plain.labels.index("order_status")]


def test_asr_transcripts_of_an_unknown_intent_are_refused():
    from nlu.dataset import DatasetError

    with pytest.raises(DatasetError, match="'weather'.*not in the training data"):
        train(_toy_examples(), holdout=0, features=FeatureConfig(embedding=None),
              augmented=[Example("va a llover", "weather", "es", "asr.tsv", 7)])


# --- several hypotheses of one utterance, read together ---------------------------------------------


def _reading(text, *scores, fallback=False):
    from nlu import IntentResult, IntentScore

    ranking = tuple(IntentScore(name, conf) for name, conf in scores)
    return IntentResult(text, ranking[0].name, ranking[0].confidence, ranking, fallback=fallback)


def test_hypotheses_are_weighed_by_how_likely_whisper_found_them():
    from nlu import combine_readings

    misheard = _reading("me colaron en la fractura", ("complaint", 0.4), ("billing_dispute", 0.35))
    heard = _reading("me cobraron en la factura", ("billing_dispute", 0.9), ("complaint", 0.05))
    combined = combine_readings([(misheard, -0.30), (heard, -0.35)])
    assert combined.intent == "billing_dispute" and combined.text == "me colaron en la fractura"
    assert combined.confidence == pytest.approx((0.35 * 1 + 0.9 * np.exp(-0.15)) / (1 + np.exp(-0.15)))
    # Far less likely hypotheses barely count.
    assert combine_readings([(misheard, -0.2), (heard, -2.0)]).intent == "complaint"


def test_a_fallbacks_stand_in_out_of_scope_entry_is_not_a_score():
    from nlu import combine_readings

    fallback = _reading("pues no se", ("out_of_scope", 0.39), ("order_status", 0.3), fallback=True)
    sure = _reading("pues el pedido", ("order_status", 0.8))
    combined = combine_readings([(fallback, -0.3), (sure, -0.3)])
    assert combined.intent == "order_status" and combined.confidence == pytest.approx(0.55)
    assert "out_of_scope" not in [s.name for s in combined.ranking]
