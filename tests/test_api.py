"""The public API a user imports."""

import geomformer_md


def test_every_public_name_resolves():
    for name in geomformer_md.__all__:
        assert getattr(geomformer_md, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute"):
        _ = geomformer_md.does_not_exist
