"""The zero-setup path the gateway uses: train the bundled data once, load it afterwards."""

import time

from nlu import IntentModel, load_or_train_default
from nlu.bundled import default_model_dir


def test_trains_once_into_the_cache_then_loads(tmp_path):
    started = time.perf_counter()
    first = load_or_train_default(tmp_path)
    assert time.perf_counter() - started < 30
    directory = default_model_dir(tmp_path)
    assert directory.name.startswith("nlu-") and (directory / "weights.npz").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [directory.name]  # no temp dirs left behind

    mtime = (directory / "weights.npz").stat().st_mtime_ns
    second = load_or_train_default(tmp_path)
    assert (directory / "weights.npz").stat().st_mtime_ns == mtime  # loaded, not retrained
    assert second.version == first.version
    assert second.parse("me robaron la tarjeta").intent == "fraud_or_loss"
    assert second.parse("my internet is not working").intent == "technical_support"


def test_a_corrupt_cached_model_is_replaced(tmp_path):
    load_or_train_default(tmp_path)
    directory = default_model_dir(tmp_path)
    (directory / "weights.npz").write_bytes(b"garbage")
    model = load_or_train_default(tmp_path)
    assert isinstance(model, IntentModel)
    assert IntentModel.load(directory).parse("quiero pagar mi factura").intent == "payment"
    assert [p.name for p in tmp_path.iterdir()] == [directory.name]
