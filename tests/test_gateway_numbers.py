"""The caller's number: only a real E.164 number can be deflected to WhatsApp."""
import phonenumbers
import pytest

from gateway.numbers import caller_number, whatsapp_key, whatsapp_number


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


# --- how the region's carriers and PBXs present callers -------------------------------------------
# Rows: (the From URI as presented, whatsapp.default_region, the canonical E.164 WhatsApp's `to` takes).
PRESENTED = [
    # MX: Mexico City mobile 55 5555 0123. The Cloud API wants 52 + 10 digits, never 521.
    ("sip:+525555550123@carrier;user=phone", "MX", "+525555550123"),
    ("sip:+5215555550123@carrier;user=phone", "MX", "+525555550123"),  # legacy mobile "1"
    ("sip:+5215555550123@carrier", "AR", "+525555550123"),  # with "+", the default region plays no part
    ("tel:+52-1-55-5555-0123", "MX", "+525555550123"),  # visual separators in a tel URI
    ("sip:5215555550123@pbx", "MX", "+525555550123"),  # no "+"
    ("sip:5215555550123@pbx", "CO", "+525555550123"),  # no "+", another region: read as international
    ("sip:525555550123@pbx", "ES", "+525555550123"),
    ("sip:005215555550123@pbx", "MX", "+525555550123"),  # international prefix 00
    ("sip:5555550123@pbx", "MX", "+525555550123"),  # national
    ("sip:015555550123@pbx", "MX", "+525555550123"),  # old long-distance trunk 01
    ("sip:0445555550123@pbx", "MX", "+525555550123"),  # old local mobile prefix 044
    ("sip:0455555550123@pbx", "MX", "+525555550123"),  # old long-distance mobile prefix 045
    ("sip:+52015555550123@pbx", "MX", "+525555550123"),  # trunk prefix kept after +52
    ("sip:4155550123@pbx", "MX", "+524155550123"),  # national digits follow the region: San Miguel de Allende
    # AR: Buenos Aires 11 2345-6789, Córdoba 351 412-3456. Mobiles are +54 9 + area + number.
    ("sip:+5491123456789@carrier", "MX", "+5491123456789"),
    ("sip:5491123456789@pbx", "AR", "+5491123456789"),
    ("sip:5491123456789@pbx", "MX", "+5491123456789"),
    ("sip:005491123456789@pbx", "AR", "+5491123456789"),
    ("sip:0111523456789@pbx", "AR", "+5491123456789"),  # 0 + area + 15 + number: the national mobile form
    ("sip:111523456789@pbx", "AR", "+5491123456789"),  # the same without the trunk 0
    ("sip:+54111523456789@carrier", "MX", "+5491123456789"),  # the 15 form behind +54
    ("sip:+540111523456789@pbx", "MX", "+5491123456789"),  # trunk 0 and 15 both kept after +54
    ("sip:0351154123456@pbx", "AR", "+5493514123456"),  # 3-digit area code
    ("sip:+541123456789@carrier", "MX", "+541123456789"),  # no 9: fixed or mobile, cannot tell; kept
    ("sip:01123456789@pbx", "AR", "+541123456789"),
    # BR: São Paulo mobile 11 98765-4321, fixed 11 2345-6789.
    ("sip:+5511987654321@carrier", "MX", "+5511987654321"),
    ("sip:5511987654321@pbx", "BR", "+5511987654321"),
    ("sip:5511987654321@pbx", "MX", "+5511987654321"),
    ("sip:11987654321@pbx", "BR", "+5511987654321"),
    ("sip:011987654321@pbx", "BR", "+5511987654321"),  # trunk 0
    ("sip:02111987654321@pbx", "BR", "+5511987654321"),  # trunk 0 + carrier selection code 21
    ("sip:+551187654321@carrier", "MX", "+5511987654321"),  # before the ninth digit
    ("sip:1187654321@pbx", "BR", "+5511987654321"),
    ("sip:0211187654321@pbx", "BR", "+5511987654321"),  # carrier code and no ninth digit
    ("sip:+551123456789@carrier", "BR", "+551123456789"),  # a fixed line gets no 9
    # CO: Bogotá mobile 300 123 4567, fixed 601 234 5678.
    ("sip:+573001234567@carrier", "MX", "+573001234567"),
    ("sip:573001234567@pbx", "CO", "+573001234567"),
    ("sip:573001234567@pbx", "MX", "+573001234567"),
    ("sip:3001234567@pbx", "CO", "+573001234567"),
    ("sip:033001234567@pbx", "CO", "+573001234567"),  # trunk 0 + long-distance carrier 3
    ("sip:6012345678@pbx", "CO", "+576012345678"),
    ("sip:3001234567@pbx", "MX", "+523001234567"),  # national digits follow the region: a Mexican 300 number
    # PE: Lima mobile 912 345 678, fixed (01) 234 5678.
    ("sip:+51912345678@carrier", "MX", "+51912345678"),
    ("sip:51912345678@pbx", "PE", "+51912345678"),
    ("sip:51912345678@pbx", "MX", "+51912345678"),
    ("sip:912345678@pbx", "PE", "+51912345678"),
    ("sip:012345678@pbx", "PE", "+5112345678"),  # trunk 0 + Lima's area code 1
    # CL: Santiago mobile 9 8765 4321, fixed 2 2123 4567.
    ("sip:+56987654321@carrier", "MX", "+56987654321"),
    ("sip:56987654321@pbx", "CL", "+56987654321"),
    ("sip:56987654321@pbx", "MX", "+56987654321"),
    ("sip:987654321@pbx", "CL", "+56987654321"),
    ("sip:221234567@pbx", "CL", "+56221234567"),
    # ES: Madrid mobile 600 123 456, fixed 91 123 45 67.
    ("sip:34600123456@pbx", "ES", "+34600123456"),
    ("sip:34600123456@pbx", "MX", "+34600123456"),
    ("sip:0034600123456@pbx", "ES", "+34600123456"),
    ("sip:600123456@pbx", "ES", "+34600123456"),
    ("sip:911234567@pbx", "ES", "+34911234567"),
    # US: San Francisco 415 555 0123.
    ("sip:14155550123@pbx", "US", "+14155550123"),
    ("sip:14155550123@pbx", "MX", "+14155550123"),  # "1" + 10 digits is not Mexico's mobile "1"
    ("sip:4155550123@pbx", "US", "+14155550123"),
    ("sip:0115215555550123@pbx", "US", "+525555550123"),  # US international prefix 011, then +52 1
]


@pytest.mark.parametrize("from_uri, region, expected", PRESENTED)
def test_presented_caller_ids_become_one_canonical_e164(from_uri, region, expected):
    number = caller_number(from_uri, {}, region)
    assert (number.e164, number.unusable) == (expected, None)


def test_the_asserted_identity_is_canonicalised_too():
    number = caller_number("sip:1000@pbx", {"P-Asserted-Identity": "<sip:+5215555550123@carrier>;party=calling"}, "MX")
    assert number.e164 == "+525555550123"


@pytest.mark.parametrize(
    "from_uri, region",
    [
        ("sip:15555550123@pbx", "MX"),  # Mexico's "1" only counts after +52 (and +1 555 is no US area code)
        ("sip:5555550123@pbx", "AR"),  # a Mexican national number under another region
        ("sip:015555550123@pbx", "AR"),  # 01 is Mexico's old trunk prefix, not Argentina's
        ("sip:1523456789@pbx", "AR"),  # local 15 form: no area code, so no way to know the city
        ("sip:0111523456789@pbx", "MX"),  # Argentina's national form under another region
        ("sip:11987654321@pbx", "MX"),
        ("sip:912345678@pbx", "MX"),
        ("sip:987654321@pbx", "MX"),
        ("sip:600123456@pbx", "MX"),
    ],
)
def test_national_forms_under_the_wrong_region_are_unusable(from_uri, region):
    number = caller_number(from_uri, {}, region)
    assert number.e164 is None
    assert "not a valid phone number" in number.unusable


# Each canonical number above, checked against phonenumbers' metadata: valid, of its country, and
# the line type the comments claim (MX, CL and US numbers do not tell mobile from fixed).
REAL = {
    "+525555550123": ("MX", phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE),
    "+524155550123": ("MX", phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE),
    "+523001234567": ("MX", phonenumbers.PhoneNumberType.SHARED_COST),  # Mexico's 300 range
    "+5491123456789": ("AR", phonenumbers.PhoneNumberType.MOBILE),
    "+5493514123456": ("AR", phonenumbers.PhoneNumberType.MOBILE),
    "+541123456789": ("AR", phonenumbers.PhoneNumberType.FIXED_LINE),
    "+5511987654321": ("BR", phonenumbers.PhoneNumberType.MOBILE),
    "+551123456789": ("BR", phonenumbers.PhoneNumberType.FIXED_LINE),
    "+573001234567": ("CO", phonenumbers.PhoneNumberType.MOBILE),
    "+576012345678": ("CO", phonenumbers.PhoneNumberType.FIXED_LINE),
    "+51912345678": ("PE", phonenumbers.PhoneNumberType.MOBILE),
    "+5112345678": ("PE", phonenumbers.PhoneNumberType.FIXED_LINE),
    "+56987654321": ("CL", phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE),
    "+56221234567": ("CL", phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE),
    "+34600123456": ("ES", phonenumbers.PhoneNumberType.MOBILE),
    "+34911234567": ("ES", phonenumbers.PhoneNumberType.FIXED_LINE),
    "+14155550123": ("US", phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE),
}


def test_every_expected_number_is_checked_against_the_metadata():
    assert {expected for _, _, expected in PRESENTED} <= REAL.keys()


@pytest.mark.parametrize("e164, region, line", [(n, r, t) for n, (r, t) in REAL.items()])
def test_the_expected_numbers_are_real_formats_of_their_country(e164, region, line):
    parsed = phonenumbers.parse(e164)
    assert phonenumbers.is_valid_number(parsed)
    assert phonenumbers.region_code_for_number(parsed) == region
    assert phonenumbers.number_type(parsed) == line


# --- matching a reply's wa_id to the number we sent to ---------------------------------------------
@pytest.mark.parametrize(
    "number, key",
    [
        ("+525555550123", "525555550123"),
        ("5215555550123", "525555550123"),  # MX: the wa_id keeps the legacy 1
        ("+5491123456789", "5491123456789"),
        ("541123456789", "5491123456789"),  # AR: the same subscriber without the mobile 9
        ("+54 9 11 2345-6789", "5491123456789"),
        ("5511987654321", "5511987654321"),
        ("551187654321", "5511987654321"),  # BR: an older account's wa_id, before the ninth digit
        ("551123456789", "551123456789"),  # BR fixed line: no ninth digit to add
        ("551171234567", "551171234567"),  # BR 7xxx-xxxx is valid as it is, so it is left alone
        ("573001234567", "573001234567"),
        ("51912345678", "51912345678"),
        ("56987654321", "56987654321"),
        ("34600123456", "34600123456"),
        ("14155550123", "14155550123"),
        ("123", "123"),  # not a valid number: its digits, matching only themselves
    ],
)
def test_whatsapp_key(number, key):
    assert whatsapp_key(number) == key


@pytest.mark.parametrize(
    "sent_to, wa_id",
    [
        ("+525555550123", "5215555550123"),
        ("+525555550123", "525555550123"),
        ("+5491123456789", "5491123456789"),
        ("+541123456789", "5491123456789"),
        ("+5493514123456", "543514123456"),
        ("+5511987654321", "5511987654321"),
        ("+5511987654321", "551187654321"),
    ],
)
def test_a_reply_matches_the_number_we_sent_to(sent_to, wa_id):
    assert whatsapp_key(sent_to) == whatsapp_key(wa_id)


@pytest.mark.parametrize(
    "sent_to, wa_id",
    [
        ("+525555550123", "5215555550124"),  # another Mexican mobile
        ("+524155550123", "14155550123"),  # same 10 digits, Mexico vs the US
        ("+5491123456789", "5491123456780"),
        ("+5491123456789", "5493514123456"),  # another Argentine city
        ("+5511987654321", "551187654322"),
        ("+551123456789", "5511923456789"),  # BR fixed 11 2345-6789 is not the mobile 11 92345-6789
        ("+551171234567", "5511971234567"),  # nor is 11 7123-4567 the mobile 11 97123-4567
        ("+541123456789", "551123456789"),  # same national digits, Argentina vs Brazil
        ("123", "1234"),
    ],
)
def test_different_customers_do_not_match(sent_to, wa_id):
    assert whatsapp_key(sent_to) != whatsapp_key(wa_id)


@pytest.mark.parametrize(
    "from_uri, region, wa_id",
    [
        ("sip:0445555550123@pbx", "MX", "5215555550123"),
        ("sip:0111523456789@pbx", "AR", "5491123456789"),
        ("sip:+541123456789@carrier", "AR", "5491123456789"),
        ("sip:1187654321@pbx", "BR", "5511987654321"),
        ("sip:11987654321@pbx", "BR", "551187654321"),
    ],
)
def test_the_caller_and_their_reply_are_the_same_customer(from_uri, region, wa_id):
    caller = caller_number(from_uri, {}, region)
    assert caller.e164 is not None
    assert whatsapp_key(caller.e164) == whatsapp_key(wa_id)
    # What the call sends to and what the reply is filed under are one string: the store matches them as such.
    assert caller.whatsapp == whatsapp_number(wa_id) == "+" + whatsapp_key(wa_id)
