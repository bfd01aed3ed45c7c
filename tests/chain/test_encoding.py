import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridledger.chain import encoding
from gridledger.chain.encoding import EncodingError

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
def test_roundtrip_is_identity(value):
    data = encoding.encode(value)
    assert encoding.decode(data) == value
    assert encoding.encode(encoding.decode(data)) == data


def test_known_bytes():
    assert (
        encoding.encode({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    )


@pytest.mark.parametrize(
    "bad",
    [
        b'{"b":1,"a":2}',  # key order
        b'{"a": 1}',  # whitespace
        b'{"a":1,"a":1}',  # duplicate key
        b'{"a":1.0}',  # float
        b'{"a":1e3}',
        b'{"a":NaN}',
        b'{"a":-0}',
        b'{"a":"\\u0041"}',  # needless escape
        b'{"a":"\xff"}',  # not UTF-8
        b'{"a":1',  # truncated
        b'\xef\xbb\xbf{"a":1}',  # BOM
        b'{"a":' + b"9" * 50 + b"}",  # oversized integer
    ],
)
def test_non_canonical_rejected(bad):
    with pytest.raises(EncodingError):
        encoding.decode(bad)


def test_encode_refuses_floats_and_bytes():
    with pytest.raises(EncodingError, match="float"):
        encoding.encode({"x": 1.5})
    with pytest.raises(EncodingError, match="bytes"):
        encoding.encode({"x": b"\x00"})


def test_hex_bytes_checks_case_and_length():
    assert encoding.hex_bytes("00ff", "f", 2) == b"\x00\xff"
    with pytest.raises(EncodingError, match="lowercase"):
        encoding.hex_bytes("00FF", "f")
    with pytest.raises(EncodingError, match="2 bytes"):
        encoding.hex_bytes("00", "f", 2)
