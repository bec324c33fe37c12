import pytest

import mailgate_echo_driver


@pytest.fixture
def mailgate_plugins():
    # In a real third-party checkout the driver is pip-installed and found through its
    # entry point; here it is registered directly (tests/test_plugin_install.py
    # covers the installed path).
    return [mailgate_echo_driver]
