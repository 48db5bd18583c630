"""Agent runtime: the process side of a terminal — MQTT session (the only paho user), durable
store, list and config handling, clock sync, heartbeats, record upload with exactly-once acks.

`agent.Agent` holds the protocol logic and never touches a socket; `mqtt.MqttLink` and
`mqtt.NetLoop` connect it (one or many agents on one network thread).
"""
