"""Terminal personalities: what a kind of terminal shows, beeps and decides on its own.

Pure: no sockets, no clock reads, no database and nothing from the platform or the modules
(device agents speak only MQTT, ARCHITECTURE §2). The agent runtime loads a personality for its
kind (`onecard.device_agents.runtime.personality`); a module whose server side must run the
same rules (canteen's offline limits and record MACs) imports them from here.
"""
