"""A server of the standard library's socketserver family (werkzeug's, http.server's, a plain TCP one)
served in a daemon thread for the length of a `with` block: the one start/stop the test servers share.

    class MyFake(ServedInThread):
        def __init__(self):
            super().__init__(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler))

    with MyFake() as fake:        # fake.port; serving until the block ends, then the port is closed
        ...
"""

from __future__ import annotations

import threading


class ServedInThread:
    def __init__(self, server):
        self.server = server
        self.port = server.server_address[1]
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
