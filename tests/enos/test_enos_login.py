"""EnOS CONNECT fields as each official SDK sends them (protocol reference 2.1-2.4)."""

from __future__ import annotations

import pytest

from enos_lab import errors
from enos_lab.enos import (
    BadLogin,
    SecureMode,
    SignMethod,
    login_credentials,
    parse_login,
    sign,
    sign_params,
    sub_device_proof,
    verify_sign,
)


def test_python_sdk_client_id() -> None:
    login = parse_login(
        "dev01|securemode=2,signmethod=hmacsha256,timestamp=1700000000000.1234|", "dev01&prodA"
    )
    assert login.sign_client_id == "dev01"
    assert login.secure_mode is SecureMode.SECRET_PER_DEVICE
    assert login.sign_method is SignMethod.SHA256
    assert login.timestamp == "1700000000000.1234"
    assert (login.device_key, login.product_key) == ("dev01", "prodA")


def test_java_sdk_client_id_keeps_its_braces_in_the_signed_client_id() -> None:
    login = parse_login(
        "dev01{ip=10.0.0.2,version=enos-mqtt-sdk-2.3,compress=DEFAULT}"
        "|securemode=2,signmethod=sha256,timestamp=1700000000000|",
        "dev01&prodA",
    )
    assert login.sign_client_id == "dev01{ip=10.0.0.2,version=enos-mqtt-sdk-2.3,compress=DEFAULT}"
    assert login.sign_params["clientId"] == login.sign_client_id


def test_documented_spaces_and_missing_signmethod() -> None:
    login = parse_login("prodA.dev01|securemode=3, timestamp=2524608000000|", "dev01&prodA")
    assert login.secure_mode is SecureMode.DYNAMIC_ACTIVATION
    assert login.sign_method is SignMethod.SHA1  # Java's default when absent
    assert login.timestamp == "2524608000000"


def test_extra_pairs_are_kept() -> None:
    login = parse_login("d|securemode=2,signmethod=md5,timestamp=1,compress=gzip|", "d&p")
    assert dict(login.extras) == {"compress": "gzip"}


@pytest.mark.parametrize(
    ("client_id", "username", "field"),
    [
        ("dev01", "dev01&prodA", "client_id"),
        ("dev01|signmethod=sha256,timestamp=1|", "dev01&prodA", "client_id"),
        ("dev01|securemode=9,signmethod=sha256,timestamp=1|", "dev01&prodA", "client_id"),
        ("dev01|securemode=x|", "dev01&prodA", "client_id"),
        ("dev01|securemode=2,signmethod=sha512|", "dev01&prodA", "client_id"),
        ("dev01|securemode=2,bogus|", "dev01&prodA", "client_id"),
        ("dev01|securemode=2|", None, "username"),
        ("dev01|securemode=2|", "dev01", "username"),
        ("dev01|securemode=2|", "&prodA", "username"),
    ],
)
def test_unparseable_logins_name_the_field(
    client_id: str, username: str | None, field: str
) -> None:
    with pytest.raises(BadLogin) as info:
        parse_login(client_id, username)
    assert info.value.field == field
    assert isinstance(info.value, errors.AuthenticationError)
    assert BadLogin is errors.BadLogin  # one class, kept in the one exception tree


def test_credentials_round_trip_through_parse_and_verify() -> None:
    client_id, username, password = login_credentials(
        "prodA", "dev01", "s3cret", timestamp="1700000000000"
    )
    assert client_id == "dev01|securemode=2,signmethod=hmacsha256,timestamp=1700000000000|"
    assert username == "dev01&prodA"
    assert password == "166c12821726f7c4c2afb38e28505ccdee4bc508ba7f93916c2e14cd1537ee2e"
    login = parse_login(client_id, username)
    assert verify_sign(login.sign_params, "s3cret", login.sign_method, password)


def test_integration_channel_signs_with_the_product_key() -> None:
    client_id, username, password = login_credentials(
        "prodA",
        "%channel%",
        "psecret",
        secure_mode=SecureMode.INTEGRATION,
        sign_method=SignMethod.SHA1,
        timestamp="5",
    )
    login = parse_login(client_id, username)
    assert login.sign_client_id == "prodA"
    assert login.device_key == "%channel%"
    params = {
        "clientId": "prodA",
        "deviceKey": "%channel%",
        "productKey": "prodA",
        "timestamp": "5",
    }
    assert password == sign(params, "psecret", SignMethod.SHA1)


def test_sub_device_proof_signs_client_id_keys_and_timestamp() -> None:
    proof = sub_device_proof("subP", "sub01", "s3cret", timestamp="1700000000000")
    assert proof["clientId"] == "subP.sub01.1700000000000"  # the Java SDK's shape
    assert proof["signMethod"] == "sha256"
    signed = sign_params(
        client_id=proof["clientId"],
        product_key="subP",
        device_key="sub01",
        timestamp="1700000000000",
    )
    assert verify_sign(signed, "s3cret", SignMethod.SHA256, proof["sign"])
    assert not verify_sign(signed, "other", SignMethod.SHA256, proof["sign"])
    sha1 = sub_device_proof(
        "subP", "sub01", "s3cret", timestamp="5", client_id="c", sign_method=SignMethod.SHA1
    )
    assert (sha1["clientId"], sha1["signMethod"]) == ("c", "sha1")
    signed = sign_params(client_id="c", product_key="subP", device_key="sub01", timestamp="5")
    assert sha1["sign"] == sign(signed, "s3cret", SignMethod.SHA1)
