"""An S3-compatible server for the backup tests: moto (PyPI) in server
mode on a free loopback port. Prints the port, then serves until its
standard input closes (the test that started it ended)."""

import sys

from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
