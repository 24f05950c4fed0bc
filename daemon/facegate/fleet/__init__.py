"""Fleet: one signed enrollment for many doors (bundles built centrally, applied per device).

`bundle` builds and verifies bundles, `transport` carries them over MQTT (whole or in
chunks), `store` switches a device's enrollment atomically, `agent` is the device side in
the daemon, `publish` the admin's side (`facegate bundle publish` and `status`).
"""

from facegate.fleet.agent import FleetAgent, start_fleet
from facegate.fleet.bundle import Bundle, BundleRejected, build_bundle, read_bundle

__all__ = ["Bundle", "BundleRejected", "FleetAgent", "build_bundle", "read_bundle", "start_fleet"]
