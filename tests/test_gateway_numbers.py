"""The caller's number: only a real E.164 number can be deflected to WhatsApp."""
import pytest

from gateway.call.numbers import caller_number


@pytest.mark.parametrize(
    "from_uri, headers, expected",
    [
        ("sip:+525555550123@127.0.0.1", {}, "+525555550123"),
        ("<sip:5555550123@pbx.local>;tag=1", {}, "+525555550123"),  # national number, default region MX
        ("sip:+34600123456@10.0.0.1;user=phone", {}, "+34600123456"),
        ("sip:1000@pbx", {"P-Asserted-Identity": "<sip:+14155550123@carrier>"}, "+14155550123"),
        ("tel:+14155550123", {}, "+14155550123"),
    ],
)
def test_caller_ids_are_normalised_to_e164(from_uri, headers, expected):
    number = caller_number(from_uri, headers, "MX")
    assert (number.e164, number.unusable) == (expected, None)


@pytest.mark.parametrize(
    "from_uri, headers, why",
    [
        ("sip:anonymous@anonymous.invalid", {}, "anonymous"),
        ("sip:+525555550123@pbx", {"Privacy": "id"}, "withheld"),
        ("sip:alice@example.com", {}, "not a phone number"),
        ("sip:123@pbx", {}, "not a valid phone number"),
    ],
)
def test_numbers_that_cannot_receive_whatsapp_say_why(from_uri, headers, why):
    number = caller_number(from_uri, headers, "MX")
    assert number.e164 is None
    assert why in number.unusable
