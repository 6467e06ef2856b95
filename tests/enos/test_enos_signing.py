"""EnOS signatures: the worked example of protocol reference 2.2 and every accepted variant."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from enos_lab.enos import SignMethod, sign, sign_content, sign_params, verify_sign
from enos_lab.errors import InvalidArgument

PARAMS = {
    "clientId": "dev01",
    "deviceKey": "dev01",
    "productKey": "prodA",
    "timestamp": "1700000000000",
}
SECRET = "s3cret"


def test_the_one_builder_of_the_signed_values() -> None:
    built = sign_params(
        client_id="dev01", product_key="prodA", device_key="dev01", timestamp="1700000000000"
    )
    assert built == PARAMS


def test_content_is_sorted_key_value_concatenation() -> None:
    shuffled = dict(reversed(list(PARAMS.items())))
    assert (
        sign_content(shuffled) == "clientIddev01deviceKeydev01productKeyprodAtimestamp1700000000000"
    )


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (SignMethod.SHA256, "166c12821726f7c4c2afb38e28505ccdee4bc508ba7f93916c2e14cd1537ee2e"),
        (SignMethod.SHA1, "ad40888d94123065d56a504a384c3f9e67375a55"),
        (SignMethod.MD5, "17f532d4a2525f892e0052d2f0dc5c21"),
    ],
)
def test_worked_example_of_the_protocol_reference(method: SignMethod, expected: str) -> None:
    assert sign(PARAMS, SECRET, method) == expected
    assert verify_sign(PARAMS, SECRET, method, expected)
    assert verify_sign(PARAMS, SECRET, method, expected.upper())  # case-insensitive


def test_wrong_secret_or_changed_value_fails() -> None:
    good = sign(PARAMS, SECRET)
    assert not verify_sign(PARAMS, "other", SignMethod.SHA256, good)
    assert not verify_sign(
        {**PARAMS, "timestamp": "1700000000001"}, SECRET, SignMethod.SHA256, good
    )
    assert not verify_sign(PARAMS, SECRET, SignMethod.MD5, good)


def test_timestamp_is_hashed_verbatim() -> None:
    with_fraction = {**PARAMS, "timestamp": "1700000000000.1234"}
    assert sign(with_fraction, SECRET) != sign(PARAMS, SECRET)
    expected = hashlib.sha256(
        b"clientIddev01deviceKeydev01productKeyprodAtimestamp1700000000000.1234s3cret"
    ).hexdigest()
    assert sign(with_fraction, SECRET) == expected


def test_hmac_sha1_variant_is_accepted_for_sha1() -> None:
    content = (sign_content(PARAMS) + SECRET).encode()
    keyed = hmac.new(SECRET.encode(), content, hashlib.sha1).hexdigest()
    assert verify_sign(PARAMS, SECRET, SignMethod.SHA1, keyed.upper())
    keyed256 = hmac.new(SECRET.encode(), content, hashlib.sha256).hexdigest()
    assert not verify_sign(PARAMS, SECRET, SignMethod.SHA256, keyed256)


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("sha256", SignMethod.SHA256),
        ("hmacsha256", SignMethod.SHA256),
        ("HmacSHA256", SignMethod.SHA256),
        ("sha1", SignMethod.SHA1),
        ("hmacsha1", SignMethod.SHA1),
        ("md5", SignMethod.MD5),
        ("hmacmd5", SignMethod.MD5),
        (None, SignMethod.SHA1),
        ("", SignMethod.SHA1),
    ],
)
def test_sign_method_names(name: str | None, method: SignMethod) -> None:
    assert SignMethod.parse(name) is method


def test_unknown_sign_method_names_the_value() -> None:
    with pytest.raises(InvalidArgument, match="sha512"):
        SignMethod.parse("sha512")
