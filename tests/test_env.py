"""recjax.env.switched_on: the on/off convention of RECJAX_* switches."""

import pytest

from recjax.env import switched_on


@pytest.mark.parametrize("value,on", [(None, True), ("1", True), ("yes", True), ("anything", True),
                                      ("0", False), ("false", False), (" OFF ", False), ("No", False),
                                      ("", False)])
def test_switched_on(monkeypatch, value, on):
  if value is None:
    monkeypatch.delenv("RECJAX_TEST_SWITCH", raising=False)
  else:
    monkeypatch.setenv("RECJAX_TEST_SWITCH", value)
  assert switched_on("RECJAX_TEST_SWITCH") is on
