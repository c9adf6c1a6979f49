"""Network peer tags."""

TARGET_HOST = "out.host"
SERVER_ADDRESS = "server.address"
TARGET_PORT = "network.destination.port"  # a metric today (the seed used the string "out.port")
BYTES_OUT = "net.out.bytes"
