import pytest

from ticketx.errors import UsageError
from ticketx.steps import check_step, to_iterations


@pytest.mark.parametrize("text,ipe,expected", [("0", 10, 0), ("1ep", 390, 390), ("2.5ep", 10, 25), ("500it", 7, 500), ("160ep", 391, 62560)])
def test_to_iterations(text, ipe, expected):
    assert to_iterations(text, ipe) == expected


@pytest.mark.parametrize("bad", ["", "ep", "10", "-1ep", "1.5it", "3 epochs", "abc"])
def test_bad_steps(bad):
    with pytest.raises(UsageError):
        check_step(bad)
