"""`fit` refuses arguments of the wrong type in one line naming the argument."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import micromacro_sim as mm
from micromacro_sim.core.errors import DataError
from tests.conftest import make_data

ARGS = dict(group="group", x="x", y="y", z="z")


@pytest.fixture
def frame():
    return make_data(seed=2, n_groups=20, group_size=5).to_frame()


def _refused(data, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        mm.fit(data, **{**ARGS, **kwargs})
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("data", [np.zeros((10, 4)), [{"group": 1, "x": 2.0}], "data.csv"])
def test_data_that_is_not_a_dataframe_is_refused(data):
    message = _refused(data)
    assert message.startswith("data: expected a pandas DataFrame")
    assert type(data).__name__ in message


def test_duplicate_column_names_are_refused(frame):
    twice = pd.concat([frame, frame[["x"]] * 2], axis=1)
    assert _refused(twice).startswith("x: 2 columns of the data have this name")
    again = pd.concat([frame, frame[["group"]]], axis=1)
    assert _refused(again).startswith("group: 2 columns of the data have this name")
    other = pd.concat([frame, frame[["xi"]]], axis=1)  # a duplicate that fit does not use
    assert mm.fit(other, **ARGS).n_groups == 20


@pytest.mark.parametrize(
    ("kwargs", "start"),
    [
        ({"x": 3}, "x: expected a column name or a list of column names (str), got 3"),
        ({"x": ["x", 1]}, "x: expected a column name or a list of column names"),
        ({"x": {"x": 1}}, "x: expected a column name or a list of column names"),
        ({"z": 1.5}, "z: expected a column name or a list of column names"),
        ({"group": None}, "group: expected a column name (str), got None"),
        ({"group": ["group"]}, "group: expected a column name (str), got ['group']"),
        ({"y": ("y",)}, "y: expected a column name (str)"),
        ({"member": 0}, "member: expected a column name (str), got 0"),
        ({"row_order_is_member": "yes"}, "row_order_is_member: expected true or false"),
        ({"cov_type": pd.Series(["HC3"])}, "cov_type: expected one of"),
    ],
)
def test_argument_types_are_checked(frame, kwargs, start):
    assert _refused(frame, **kwargs).startswith(start)


def test_a_frame_passed_as_a_column_is_named_briefly(frame):
    message = _refused(frame, x=frame)
    assert message == ("x: expected a column name or a list of column names (str), got a "
                       "pandas.DataFrame")


def test_prepare_refuses_what_is_not_a_dataframe():
    import numpy as np

    from micromacro_sim.api.userdata import prepare
    from micromacro_sim.core.errors import DataError

    with pytest.raises(DataError, match=r"^data: expected a pandas DataFrame .*ndarray"):
        prepare(np.zeros((3, 3)), group="g", x="x", y="y")
