"""A workload profiled by the official Pyroscope Python agent (pyroscope-io), pointed at Kiln."""
import hashlib
import os
import sys
import time

import pyroscope


def pyroscope_burn(seconds):
    end = time.time() + seconds
    data = b"x" * 4096
    while time.time() < end:
        data = hashlib.sha256(data).digest() * 128


def main():
    server, duration = sys.argv[1], float(sys.argv[2])
    pyroscope.configure(
        application_name="agent-python",
        server_address=server,
        # Grafana Cloud style: the API key as the Basic password (none without KILN_AGENT_KEY).
        basic_auth_username="agent" if os.environ.get("KILN_AGENT_KEY") else "",
        basic_auth_password=os.environ.get("KILN_AGENT_KEY", ""),
        tags={"agent": "pyroscope-io"},
        sample_rate=100,
    )
    end = time.time() + duration
    while time.time() < end:
        with pyroscope.tag_wrapper({"phase": "burn"}):
            pyroscope_burn(0.1)
    pyroscope.shutdown()


if __name__ == "__main__":
    main()
