"""The host layershell runs on: `core init`, its accounts and executables, Ignition and
first boot, the system extension."""
