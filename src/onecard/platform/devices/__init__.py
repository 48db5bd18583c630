"""Terminal device manager: registry, credentials, lists, bundles, taps, ingest, bridge, tasks."""
