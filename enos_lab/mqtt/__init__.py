"""Sans-IO MQTT 3.1.1 / 5.0: packets, codec and topics (no sockets, no timers, no auth)."""
