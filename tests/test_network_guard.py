import socket
import threading

import pytest
from conftest import NetworkAccessError


def test_outside_connection_is_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(NetworkAccessError, match="offline"):
        s.connect(("93.184.216.34", 80))
    s.close()


def test_loopback_is_allowed():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    t = threading.Thread(target=lambda: srv.accept()[0].close())
    t.start()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    t.join(5)
    srv.close()
